"""Standard exports of a compressed file, for deployment where this package is not installed.

    python -m helpers.export model.dcz --format onnx|torchscript|safetensors --out PATH
                             [--image-size N] [--in-channels C]

or ``export(path, format, out)``. Each is written from the decoded dense fp32 model (pruning masks
and shared codebooks already folded into plain weights; nothing of this package is needed to run
it): ONNX (any runtime; the batch dimension is dynamic), TorchScript (``torch.jit.load``), or
safetensors (the ``state_dict`` alone, with the registry's ``create_args`` and the file's metadata
as JSON strings in its header, for ``helpers.models.create(**create_args)``). The ONNX model carries
the file's metadata in its ``metadata_props`` (``class_names``, ``image_size``, ``mean``, ``std``,
``create_args``, each a JSON string): feed it ``(pixels / 255 - mean) / std``, NCHW float32, after
resizing the shorter side to ``image_size`` and center-cropping.

None of them keeps the sparsity or the weight sharing: each stores every weight as fp32, so an
export is as large as the dense model (AlexNet-23: ~228 MB against a few MB of ``.dcz``); a
general-purpose compressor gets little back from random-looking codebook values. Speed: ONNX
Runtime and TorchScript run the dense model at dense speed; only ``helpers.runtime.sparse`` keeps both the
small memory and the sparse speed, and it reads the ``.dcz`` itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import tempfile
import warnings
from pathlib import Path

import torch

from .coding import fileformat
from .io import atomic_write_bytes

FORMATS = {"onnx": ("onnx",), "torchscript": (), "safetensors": ("safetensors",)}


def _require(fmt: str) -> None:
    missing = [m for m in FORMATS[fmt] if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"--format {fmt} needs {', '.join(missing)}: pip install {' '.join(missing)}")


def example_input(model, image_size=None, batch: int = 1, in_channels=None) -> torch.Tensor:
    """A random input of the model's shape: ``image_size`` and ``in_channels`` when given, else from
    its create_args or metadata, else (channels) from its first Conv2d/Linear (``input_channels``)."""
    args = getattr(model, "create_args", None) or {}
    size = _positive(image_size, "image_size") or args.get("image_size") or \
        (getattr(model, "metadata", None) or {}).get("image_size")
    if not size:
        raise ValueError("the file does not record its image size: pass image_size=")
    channels = _positive(in_channels, "in_channels") or args.get("in_channels") or input_channels(model, size)
    if not channels:
        raise ValueError(f"cannot tell how many input channels {type(model).__name__} takes: pass in_channels=")
    return torch.randn(batch, channels, size, size)


def input_channels(model, image_size: int) -> int | None:
    """The channels the model's first Conv2d/Linear (in registration order) reads, or None: a Conv2d's
    in_channels, or a Linear's in_features over image_size**2 when it divides (an MLP on pixels)."""
    from torch import nn

    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    if isinstance(first, nn.Conv2d):
        return first.in_channels
    if isinstance(first, nn.Linear) and first.in_features % (image_size * image_size) == 0:
        return first.in_features // (image_size * image_size) or None
    return None


def _positive(value, name: str):
    """``value`` if None or an integer in [1, 4096] (the reader's bound on image_size), else ValueError."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096):
        raise ValueError(f"{name} must be an integer in [1, 4096], got {value!r}")
    return value


def to_bytes(model, fmt: str, x: torch.Tensor | None, metadata: dict | None = None) -> bytes:
    """The export of a plain (non-parametrized) module in ``fmt``, as bytes (``x``: an example input;
    safetensors needs none)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
    _require(fmt)
    model = model.eval()
    if fmt == "safetensors":
        from safetensors.torch import save

        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        return save(state, metadata={k: json.dumps(v) for k, v in (metadata or {}).items()})
    if fmt == "onnx":
        return onnx_bytes(model, x, metadata)
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():  # torch.jit is deprecated for torch.export, but
        warnings.simplefilter("ignore", FutureWarning)  # libtorch (C++) and mobile still load it
        torch.jit.save(torch.jit.trace(model, x), buf)
    return buf.getvalue()


def onnx_bytes(model, x: torch.Tensor, metadata: dict | None = None) -> bytes:
    """ONNX with a dynamic batch axis, and ``metadata`` (class names, image size, mean, std, ...) as
    JSON strings in the model's ``metadata_props``, so a runtime knows how to feed it.

    torch's current exporter (``dynamo=True``, through torch.export and onnxscript) is used: the
    legacy TorchScript-based one cannot express an adaptive pooling whose output does not divide
    its input (AlexNet at 64 px pools a 1x1 map to 6x6) and is deprecated. Should the current one
    fail on a model, the legacy one is tried, with a warning naming the reason.
    """
    import onnx

    x = torch.cat([x, x]) if x.shape[0] == 1 else x  # a batch of 1 would be taken as a fixed size
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        path = Path(folder) / "model.onnx"
        names = dict(input_names=["input"], output_names=["logits"])
        try:
            torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False, optimize=True,
                              dynamic_shapes=({0: torch.export.Dim("batch")},), **names)
        except Exception as exc:  # torch.export raises many types for what it cannot trace
            warnings.warn(f"torch's current ONNX exporter failed ({type(exc).__name__}: {str(exc)[:200]}); "
                          "using the legacy exporter")
            torch.onnx.export(model, (x,), str(path), dynamo=False,
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, **names)
        proto = onnx.load(str(path))
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    return proto.SerializeToString()


def export(path, fmt: str, out, *, model=None, image_size=None, in_channels=None) -> Path:
    """Write the compressed file at ``path`` as ``fmt`` to ``out`` (atomically); returns ``out``.

    ``model``: a fresh instance, for a file of your own class (see ``helpers.load_compressed``).
    ``image_size``, ``in_channels``: the input's shape, where the file and the model do not tell it
    (``example_input``); safetensors needs no input.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
    _require(fmt)  # before decoding anything
    _positive(image_size, "image_size"), _positive(in_channels, "in_channels")
    net = fileformat.load_compressed(path, quantized=False, model=model).eval()
    meta = {"create_args": getattr(net, "create_args", None), "metadata": net.metadata}
    if fmt == "onnx":  # what a runtime needs to feed the model, one key each (the safetensors header
        meta = {**(net.metadata or {}), "create_args": meta["create_args"]}  # keeps both dicts whole)
    x = None if fmt == "safetensors" else example_input(net, image_size, in_channels=in_channels)
    data = to_bytes(net, fmt, x, meta)
    atomic_write_bytes(out, data)
    return Path(out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m helpers.export", description=__doc__.splitlines()[0])
    parser.add_argument("file", help="a compressed model file (.dcz)")
    parser.add_argument("--format", required=True, choices=list(FORMATS))
    parser.add_argument("--out", required=True)
    parser.add_argument("--image-size", type=int, default=None, help="input size, if the file lacks it")
    parser.add_argument("--in-channels", type=int, default=None, help="input channels, if the file lacks them")
    args = parser.parse_args(argv)
    out = export(args.file, args.format, args.out, image_size=args.image_size, in_channels=args.in_channels)
    print(f"{out}: {out.stat().st_size} bytes ({args.format})")


if __name__ == "__main__":
    main()
