"""Trained quantization (paper section 3): per-layer k-means weight sharing, centroid fine-tuning.

Introduced in notebook 05.

Pure functions first (``cluster_weight``, over ``helpers.quantize.kmeans``), model-level wrappers
second. A quantized layer carries a ``torch.nn.utils.parametrize`` parametrization whose single
trainable tensor is the codebook; in ``state_dict`` a quantized layer ``L`` appears as::

    L.parametrizations.weight.original    float32 (k,)   the codebook (an nn.Parameter)
    L.parametrizations.weight.0.indices   uint8/int16/int32, weight's shape (compact; 0 where pruned)
    L.parametrizations.weight.0.mask      bool, weight's shape (True where the weight survived pruning)
    L.parametrizations.weight.0.bits      int64 scalar
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .kmeans import INITS, kmeans_1d


@dataclass
class QuantizedLayer:
    """One layer's shared weights: ``weight == codebook[indices] * mask`` exactly.

    This is the interface between quantization and the compressed file format.

    ``indices`` may have any integer dtype that holds ``0 .. k - 1`` (e.g. uint8 for k <= 256, as a
    quantized layer's state_dict stores them); ``cluster_weight``, ``export_quantized`` and
    ``helpers.coding.fileformat.read_compressed`` return int64.
    """

    codebook: torch.Tensor  # float32, shape (k,), k <= 2**bits; the shared values (centroids)
    indices: torch.Tensor   # integer, the weight's shape; index into codebook (ignored where mask is False)
    mask: torch.Tensor      # bool, the weight's shape; True where the weight survived pruning
    bits: int               # index width the layer was clustered with

    def weight(self) -> torch.Tensor:
        # .long(): a uint8 index tensor would otherwise be taken as a boolean mask
        return self.codebook[self.indices.long()] * self.mask


# ---------------------------------------------------------------------------------------------------
# Pure functions: clustering one weight tensor (1-D k-means: helpers.quantize.kmeans).

def _check_bits(bits, what="bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise ValueError(f"{what} must be an integer from 1 to 16 (2 to 65536 shared values), got {bits!r}.")
    return int(bits)


def cluster_weight(weight: torch.Tensor, bits: int, init: str = "linear", seed=None, **kmeans_kwargs
                   ) -> QuantizedLayer:
    """Cluster a weight's non-zero entries into at most ``2**bits`` shared values.

    Zero is never a cluster: pruned (exactly zero) weights stay zero through ``mask``. A centroid can
    in principle land exactly on 0.0; the mask still marks those weights as survivors. A layer with
    no survivors gets the codebook ``[0.]`` (unused) rather than an empty one.
    """
    return _cluster(weight, bits, init, seed, **kmeans_kwargs)[0]


def _cluster(weight, bits, init="linear", seed=None, **kmeans_kwargs):
    """``cluster_weight`` plus the flat survivor positions and their labels, reused by the installer."""
    bits = _check_bits(bits)
    flat = weight.detach().cpu().reshape(-1)
    positions = flat.nonzero().squeeze(1)
    centroids, labels = kmeans_1d(flat[positions].numpy(), 2 ** bits, init=init, seed=seed, **kmeans_kwargs)
    if centroids.size == 0:  # fully pruned: one unused entry, so codebook[indices] stays indexable
        centroids = np.zeros(1)
    labels = torch.from_numpy(labels)
    indices = torch.zeros(flat.numel(), dtype=torch.int64).index_put_((positions,), labels)
    q = QuantizedLayer(torch.from_numpy(centroids).float(), indices.view(weight.shape),
                       (flat != 0).view(weight.shape), bits)
    return q, positions, labels


# ---------------------------------------------------------------------------------------------------
# The parametrization: weight = codebook[indices] * mask, codebook the only trainable tensor.

class _SharedGather(torch.autograd.Function):
    """Scatter ``codebook[labels]`` into a zero weight; backward sums member gradients (paper eq. 3).

    Autograd through ``codebook[indices] * mask`` gives the same gradient, but gathers and
    scatter-adds over every position of the dense weight; here both directions touch survivors only.
    """

    @staticmethod
    def forward(ctx, codebook, positions, labels, shape):
        ctx.save_for_backward(positions, labels)
        ctx.k = codebook.numel()
        values = codebook.index_select(0, labels)
        if positions is None:  # nothing pruned
            return values.view(shape)
        return codebook.new_zeros(shape.numel()).index_copy_(0, positions, values).view(shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        positions, labels = ctx.saved_tensors
        g = grad.reshape(-1) if positions is None else grad.reshape(-1).take(positions)
        # float64 sums: a cluster of an fc layer can have a million members
        return torch.bincount(labels, weights=g.double(), minlength=ctx.k).to(grad.dtype), None, None, None


def _index_dtype(k: int) -> torch.dtype:
    return torch.uint8 if k <= 256 else torch.int16 if k <= 32768 else torch.int32


_NUMPY_INDEX = {torch.uint8: np.uint8, torch.int16: np.int16, torch.int32: np.int32}


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _from_survivors(shape, k, positions, labels):
    """SharedWeight's buffers from the survivors alone: (indices, mask, positions or None, labels).

    Checks what would otherwise fail late or silently: labels within the codebook, positions
    strictly increasing inside the weight. The dense buffers are numpy zeros (calloc'd), so only
    the pages holding survivors are ever written: a 1 %-dense fc6 costs no full pass over 100M
    entries. (numpy's scatter and int64 casts are also several times faster than torch's here.)
    """
    n = math.prod(shape)
    pos, lab = _numpy(positions), _numpy(labels)
    if pos.ndim != 1 or lab.shape != pos.shape or pos.dtype.kind not in "iu" or lab.dtype.kind not in "iu":
        raise ValueError(f"survivors must be two 1-D integer arrays of equal length, got positions "
                         f"{pos.dtype} {pos.shape} and labels {lab.dtype} {lab.shape}.")
    if pos.size:
        if lab.min() < 0 or lab.max() >= k:
            raise ValueError(f"a survivor's label is outside the codebook of {k} entries.")
        if pos[0] < 0 or pos[-1] >= n or (pos.size > 1 and not (pos[1:] > pos[:-1]).all()):
            raise ValueError(f"survivor positions must be strictly increasing in [0, {n}).")
    indices = np.zeros(n, dtype=_NUMPY_INDEX[_index_dtype(k)])
    mask = np.zeros(n, dtype=bool)
    indices[pos] = lab
    mask[pos] = True
    return (torch.from_numpy(indices).view(shape), torch.from_numpy(mask).view(shape),
            None if pos.size == n else torch.from_numpy(pos.astype(np.int64)),  # astype copies
            torch.from_numpy(lab.astype(np.int64)))


class SharedWeight(nn.Module):
    """Parametrization ``codebook -> codebook[indices] * mask`` registered with ``unsafe=True``.

    Design choice: the dense weight is *replaced*. ``right_inverse`` hands the codebook to
    ``register_parametrization``, so ``parametrizations.weight.original`` IS the (k,) codebook and
    no stale dense copy is kept, trained or saved. The parameter object is reused (``set_``), so
    build the optimizer after quantizing. Assigning ``module.weight = ...`` later is refused.

    ``q``: a ``QuantizedLayer``, or a survivors-only layer (see ``import_quantized``). With
    ``positions, labels`` (the flat positions of the surviving weights and their codebook indices),
    or for a survivors-only layer, the buffers are built from the survivors and ``q.indices`` /
    ``q.mask`` are not read: no pass over the dense index tensor.
    """

    def __init__(self, q, positions=None, labels=None):
        super().__init__()
        k = q.codebook.numel() if isinstance(q.codebook, torch.Tensor) else np.size(q.codebook)
        if labels is None and not isinstance(q, QuantizedLayer):
            positions, labels = q.positions, q.indices
        if labels is None:
            indices, mask = q.indices.to(_index_dtype(k)) * q.mask, q.mask.clone()
        else:
            indices, mask, positions, labels = _from_survivors(_layer_shape(q), k, positions, labels)
        self.register_buffer("indices", indices)
        self.register_buffer("mask", mask)
        self.register_buffer("bits", torch.tensor(int(q.bits)))
        # Derived, not saved: flat positions of survivors and their int64 labels (rebuilt after load).
        self.register_buffer("_positions", positions, persistent=False)
        self.register_buffer("_labels", labels, persistent=False)
        self._pending = torch.as_tensor(q.codebook).detach().clone()

    def right_inverse(self, weight):
        if self._pending is None:
            raise RuntimeError("A quantized weight is shared; change its codebook "
                               "(module.parametrizations.weight.original) instead of assigning it.")
        codebook, self._pending = self._pending.to(weight.device, weight.dtype), None
        return codebook

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._positions = self._labels = None

    def survivors(self):
        """(flat positions of the surviving weights or None if none is pruned, their int64 labels)."""
        if self._labels is None:
            flat_mask = self.mask.reshape(-1)
            dense = bool(flat_mask.all())
            self._positions = None if dense else flat_mask.nonzero().squeeze(1)
            flat = self.indices.reshape(-1)
            self._labels = (flat if dense else flat[self._positions]).long()
        return self._positions, self._labels

    def forward(self, codebook):
        positions, labels = self.survivors()
        return _SharedGather.apply(codebook, positions, labels, self.mask.shape)


def _shared(module: nn.Module) -> SharedWeight | None:
    """The layer's SharedWeight, if its weight is exactly a codebook gather (nothing stacked on it)."""
    plist = getattr(getattr(module, "parametrizations", None), "weight", None)
    return plist[0] if plist is not None and len(plist) == 1 and isinstance(plist[0], SharedWeight) else None


def _bake_weight(module: nn.Module) -> None:
    """Replace a parametrized weight (pruning mask, older codebook) by a plain Parameter of its value.

    Not ``remove_parametrizations``: ``copy.deepcopy`` of a parametrized model shares the injected
    ``Parametrized*`` class, and removal deletes the ``weight`` property from that class, breaking
    the other copy. Swapping this instance's class back touches no shared state.
    """
    if not parametrize.is_parametrized(module, "weight"):
        return
    if set(module.parametrizations) != {"weight"}:  # other tensors parametrized too: torch's way
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        return
    with torch.no_grad():
        weight = module.weight.detach().clone()
    module.__class__ = module.__class__.__bases__[0]
    del module._modules["parametrizations"]
    module.weight = nn.Parameter(weight)


def _layer_shape(q) -> tuple:
    return tuple(q.mask.shape) if isinstance(q, QuantizedLayer) else tuple(q.shape)


def _install(module: nn.Module, q, positions=None, labels=None) -> None:
    if _layer_shape(q) != tuple(module.weight.shape):
        raise ValueError(f"Quantized layer has shape {_layer_shape(q)}, the module's weight "
                         f"{tuple(module.weight.shape)}.")
    _bake_weight(module)
    shared = SharedWeight(q, positions, labels).to(module.weight.device)
    parametrize.register_parametrization(module, "weight", shared, unsafe=True)


# ---------------------------------------------------------------------------------------------------
# Model-level wrappers.

def _targets(model, layers):
    from ..models import compressible_layers

    found = compressible_layers(model)
    if layers is None:
        return found
    unknown = [n for n in layers if n not in found]
    if unknown:
        raise ValueError(f"Unknown layer(s) {unknown}; compressible layers are {list(found)}.")
    return {n: found[n] for n in layers}


def quantize_model(model: nn.Module, bits: dict | None = None, conv_bits: int = 8, fc_bits: int = 5,
                   init: str = "linear", layers=None, seed=None) -> dict[str, QuantizedLayer]:
    """Weight-share every Conv2d/Linear (or ``layers``): 2**conv_bits / 2**fc_bits clusters each.

    ``bits`` overrides per layer, e.g. ``{'features.0': 6}``. Pruned (zero) weights stay zero.
    Afterwards ``model.parameters()`` yields each layer's codebook (its weight's only trainable
    part) and the fp32 biases; SGD on them updates every centroid by the sum of its members'
    gradients (paper eq. 3). Weight decay, if the optimizer has it, also shrinks the codebooks.
    Returns the initial clustering per layer.
    """
    conv_bits, fc_bits = _check_bits(conv_bits, "conv_bits"), _check_bits(fc_bits, "fc_bits")
    if init not in INITS:
        raise ValueError(f"Unknown k-means init {init!r}; choose one of {', '.join(INITS)}.")
    targets = _targets(model, layers)
    bits = dict(bits or {})
    unknown = [n for n in bits if n not in targets]
    if unknown:
        raise ValueError(f"bits names unknown or unselected layer(s) {unknown}; choose from {list(targets)}.")
    for name, b in bits.items():
        _check_bits(b, f"bits[{name!r}]")
    result = {}
    for name, module in targets.items():
        b = bits.get(name, conv_bits if isinstance(module, nn.Conv2d) else fc_bits)
        result[name], positions, labels = _cluster(module.weight, b, init=init, seed=seed)
        _install(module, result[name], positions, labels)
    return result


def remove_sharing(model: nn.Module) -> nn.Module:
    """Plain dense weights again in every Conv2d/Linear (weight sharing and pruning masks baked in)."""
    from ..models import compressible_layers

    for module in compressible_layers(model).values():
        _bake_weight(module)
    return model


def export_quantized(model: nn.Module) -> dict[str, QuantizedLayer]:
    """Current (e.g. fine-tuned) codebooks of all quantized layers: detached float32 on the CPU."""
    from ..models import compressible_layers

    out = {}
    for name, module in compressible_layers(model).items():
        if (shared := _shared(module)) is not None:
            out[name] = QuantizedLayer(module.parametrizations.weight.original.detach().float().cpu().clone(),
                                       shared.indices.long().cpu(), shared.mask.cpu().clone(),
                                       int(shared.bits))
    return out


def import_quantized(model: nn.Module, layers: dict) -> nn.Module:
    """Install ``layers`` (from ``export_quantized`` or a file) so weights match bit for bit.

    A value is a ``QuantizedLayer`` or a survivors-only layer: any object with ``shape``, ``bits``,
    ``codebook`` (k,) float32, ``positions`` (flat C-order positions of the surviving weights,
    strictly increasing) and ``indices`` (each survivor's codebook index), arrays or tensors of any
    integer dtype, as ``helpers.coding.fileformat.SparseLayer`` holds them. The latter installs straight
    from the survivors: no dense int64 indices are built and no dense tensor is scanned. Either
    way the model copies what it keeps; the weight is +0.0 at pruned positions.

    The module's current weight supplies only shape, dtype, device and the Parameter object that
    becomes the codebook, so it may be uninitialised (``torch.empty``).
    """
    targets = _targets(model, list(layers))
    for name, q in layers.items():
        _install(targets[name], q)
    return model


def load_quantized_state_dict(model: nn.Module, state_dict: dict, strict: bool = True):
    """Load a quantized model's ``state_dict`` into a fresh model (re-creating the parametrizations)."""
    suffix = ".parametrizations.weight.0.indices"
    layers = {}
    for key in state_dict:
        if key.endswith(suffix):
            p = key[: -len(suffix)] + ".parametrizations.weight."
            layers[key[: -len(suffix)]] = QuantizedLayer(  # indices as stored: compact, no int64 copy
                state_dict[p + "original"], state_dict[key], state_dict[p + "0.mask"],
                int(state_dict[p + "0.bits"]))
    import_quantized(model, layers)
    return model.load_state_dict(state_dict, strict=strict)


def distinct_values(model: nn.Module) -> dict[str, int]:
    """Number of distinct non-zero weight values per Conv2d/Linear layer.

    Quantized layers count the distinct non-zero codebook entries in use (O(n), no sort of the
    weight); other layers ``torch.unique`` their non-zero weights.
    """
    from ..models import compressible_layers

    out = {}
    with torch.no_grad():
        for name, module in compressible_layers(model).items():
            if (shared := _shared(module)) is not None:
                codebook = module.parametrizations.weight.original
                values = codebook[torch.bincount(shared.survivors()[1], minlength=codebook.numel()) > 0]
            else:
                values = module.weight
            out[name] = int(torch.unique(values[values != 0]).numel())
    return out


# ---------------------------------------------------------------------------------------------------
