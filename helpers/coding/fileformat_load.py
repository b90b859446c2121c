"""Loading a ``.dcz`` file into a model (step 2 of ``fileformat_read``'s three): the module the weights
go into (``skeleton``), the check that every declared layer and tensor is one of its own before any
stream is decoded (``_check_fits``), then the weights installed (``load_compressed``).
"""

from __future__ import annotations

import torch

from .fileformat_layout import CREATE_KEYS, MAX_ELEMENTS, CompressedFileError
from .fileformat_read import _need, _read, declare


def load_compressed(path, map_location="cpu", quantized: bool = True, max_elements: int = MAX_ELEMENTS,
                    model=None):
    """Rebuild the ``nn.Module`` of a compressed file.

    A file of a registry model (the paper's four, torchvision's by name) rebuilds itself through
    ``helpers.models.create``; pass ``model=`` (a fresh instance of the same architecture) for a
    file of your own class, or to load into an instance you built. Every stored shape is checked
    against the model before any stream is decoded or anything is allocated; a load that fails
    leaves ``model`` as it was.

    ``quantized``: install the layers with ``helpers.quantize.quantization.import_quantized`` (weight =
    ``codebook[indices] * mask``, the codebook trainable; the same state_dict as after
    ``quantize_model``), straight from the survivors the file stores: no dense float weight or
    int64 index tensor is built. False gives plain dense Parameters of the same values.
    The file's metadata becomes ``model.metadata``.
    """
    from ..quantize import quantization

    p, model = open_for_model(_read(path), model, max_elements)
    values = dict(p.tensors)
    for n, s in p.layers.items():
        # a placeholder (uninitialised, its pages never touched) that import_quantized replaces
        values[f"{n}.weight"] = torch.empty(s.shape, dtype=torch.float32) if quantized else s.dense()
    model.load_state_dict(values, assign=True)  # replaces meta tensors; Parameters stay Parameters
    if quantized:
        try:  # parse has checked the survivors; import_quantized checks them again, cheaply
            quantization.import_quantized(model, p.layers)
        except ValueError as exc:
            raise CompressedFileError(f"cannot install the quantized layers: {exc}") from exc
    model.metadata = p.header["metadata"]
    return model.to(map_location)


def open_for_model(buf, model=None, max_elements: int = MAX_ELEMENTS):
    """(Parsed, module): a file's layers decoded, and the module they go into (``skeleton``).

    The order is the defence against decompression bombs: the header's layers and tensors are
    checked against the module first (``_check_fits``), so no stream decodes to more weights than
    the architecture has, whatever the file declares (a 49 KB file declaring 2**28 weights of a
    probability-1 symbol took 34 s and 4 GB before its layer was found foreign). Only once the file
    has decoded is a given ``model``'s weight sharing removed: a refused file leaves it untouched.
    """
    from ..quantize import quantization

    declared = declare(buf, max_elements)
    net = skeleton(declared.header, model, max_elements)
    _check_fits(declared, plain_tensors(net), net, given=model is not None)
    parsed = declared.decode()
    if model is not None:
        quantization.remove_sharing(net)  # a pruned or quantized instance: plain weights again
    return parsed, net


def skeleton(header: dict, model=None, max_elements: int = MAX_ELEMENTS):
    """The module a parsed file's weights go into: ``model`` if given (unchanged), else built from create_args.

    A registry model is built on the meta device (shapes only: initialising parameters would be
    wasted work), unless it has non-persistent buffers, which need their real initialisation.
    """
    from torch import nn

    from .. import models

    args = header["create_args"]
    if model is not None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model= must be an nn.Module instance, got {type(model).__name__}")
        return model
    if "name" not in args:
        raise CompressedFileError(
            f"{header.get('create_args', {}).get('class', 'a model')} is not in the model registry, so the "
            "file cannot rebuild it: pass a fresh instance of it, load_compressed(path, model=MyNet(...)).")
    _need(set(args) <= CREATE_KEYS and models.is_known(args["name"]),
          f"create_args {args} are not a registry call")
    try:
        with torch.device("meta"):
            built = models.create(**args)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise CompressedFileError(f"cannot build the model the file describes ({args}): {exc}") from exc
    _need(sum(t.numel() for t in built.state_dict().values()) <= max_elements,
          "model too large (raise max_elements)")
    if any(k not in built.state_dict() for k, _ in built.named_buffers()):
        built = models.create(**args)
    return built


def plain_tensors(model) -> dict:
    """The state_dict ``model`` has once its weight sharing is removed (parametrized tensors as
    meta tensors of their value's shape and dtype), without removing it."""
    from torch.nn.utils import parametrize

    out = {k: v for k, v in model.state_dict().items() if ".parametrizations." not in k}
    for prefix, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for name in module.parametrizations:
                with torch.no_grad():
                    value = getattr(module, name)
                out[f"{prefix}.{name}" if prefix else name] = torch.empty(value.shape, dtype=value.dtype,
                                                                          device="meta")
    return out


def _check_fits(p, expected: dict, model, given: bool = False) -> None:
    """Every layer and tensor ``p`` (Declared or Parsed) stores is one of the model's, with its shape
    and dtype, and none is missing. ``expected``: the model's plain state_dict (``plain_tensors``);
    ``given``: the model is the caller's instance, which the messages then name."""
    from .. import models

    what = f"the {type(model).__name__} passed as model=" if given else \
        (p.header["create_args"].get("name") or type(model).__name__)
    fix = ": pass an instance of the architecture the file was saved from" if given else \
        ": the file is damaged, or was not written by this code's model of that name"
    found = models.compressible_layers(model)
    for name, shape in p.shapes.items():
        has = tuple(expected[f"{name}.weight"].shape) if name in found and f"{name}.weight" in expected else None
        _need(has == tuple(shape), f"layer {name!r} {tuple(shape)} is not a weight of {what}"
              + (f" (its {name!r} has {has})" if has is not None else "") + fix)
    stored = {f"{n}.weight" for n in p.shapes} | set(p.tensors)
    _need(stored == set(expected), f"file and model {what} disagree on tensors: missing "
          f"{sorted(set(expected) - stored)[:5]}, unexpected {sorted(stored - set(expected))[:5]}{fix}")
    for name, t in p.tensors.items():
        _need(t.shape == expected[name].shape and t.dtype == expected[name].dtype,
              f"tensor {name!r} is {t.dtype} {tuple(t.shape)}, the model wants "
              f"{expected[name].dtype} {tuple(expected[name].shape)}{fix}")
