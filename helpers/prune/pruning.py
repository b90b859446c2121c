"""Magnitude pruning (paper section 2, Han et al. "Learning both weights and connections").

Introduced in notebooks 03 (one-shot pruning, sensitivity analysis) and 04 (iterative pruning with
retraining). Pure functions on tensors come first; thin model-level wrappers follow.

A pruned layer keeps its dense weight and a boolean mask; the effective weight is
``original * mask``. Masks are attached with ``torch.nn.utils.parametrize`` and a small ``Mask``
module holding the mask as a buffer, rather than ``torch.nn.utils.prune``:

* every forward pass first zeroes the pruned entries of ``original`` in place, so the weight the
  layer uses has exact zeros there whatever the optimizer did to ``original`` in between
  (momentum from before pruning, weight decay, Adam): no post-step hook to forget;
* masks live in the state_dict as ``<layer>.parametrizations.weight.0.mask`` (the dense weight as
  ``<layer>.parametrizations.weight.original``), and deepcopy works;
* ``torch.nn.utils.prune`` uses forward pre-hooks and renames the weight to
  ``weight_orig``/``weight_mask`` with a plain attribute ``weight``, which breaks state_dict round
  trips into fresh models and deepcopy in known ways.

Cost: one in-place elementwise pass per forward, no copy of the weight. The backward pass is the
identity (straight-through): ``original.grad`` is the dense gradient, whose pruned entries the
optimizer may apply to ``original``; the next forward zeroes them again. Survivors train exactly
as with a masked gradient (optimizers act elementwise). Masking the gradient as well would cost a
second pass over every weight (``benchmarks/bench_pruning.py`` measures the cost against a plain
step); call ``masked_gradients(model)`` before gradient clipping by norm.
Registering a mask keeps the Parameter object (optimizers keep working) but moves it after the
bias in ``parameters()`` and the state_dict.

Layer names are those of ``helpers.models.compressible_layers`` (e.g. ``"features.0"``). Only
Conv2d/Linear weights are pruned, never biases. How much to prune each layer (the sensitivity scan
and the budget split) is ``helpers.prune.sensitivity``.
"""

from __future__ import annotations

import math
import numbers
import re

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..models import compressible_layers

__all__ = [
    "mask_from_threshold", "quality_threshold", "mask_from_quality", "mask_from_sparsity",
    "global_masks", "sparsity_schedule", "Mask", "apply_masks", "current_masks",
    "prune_by_quality", "prune_to_sparsity", "prune_globally", "kept_fractions",
    "total_kept_fraction", "masked_gradients", "remove_masks", "prepare_for_state_dict", "load_pruned_state_dict",
]


def _check_fraction(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}.")
    return float(value)


def _check_non_negative(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0.0:
        raise ValueError(f"{what} must be a non-negative number, got {value!r}.")
    return float(value)


def mask_from_threshold(weight: torch.Tensor, threshold: float) -> torch.Tensor:
    """Keep-mask of the weights with ``|w| > threshold`` (so exact zeros are always removed)."""
    threshold = _check_non_negative(threshold, "threshold")
    return weight.detach().abs() > threshold


def quality_threshold(weight: torch.Tensor, quality: float) -> float:
    """The paper's rule: ``quality * std(weight)``.

    The std is ``torch.std`` over the whole tensor (Bessel-corrected, pruned zeros included), as in
    Distiller's reproduction of Han's Caffe pruner; including the zeros makes repeated pruning
    with the same quality converge instead of eating ever more weights.
    """
    quality = _check_non_negative(quality, "quality")
    return quality * (weight.detach().float().std().item() if weight.numel() > 1 else 0.0)


def mask_from_quality(weight: torch.Tensor, quality: float) -> torch.Tensor:
    return mask_from_threshold(weight, quality_threshold(weight, quality))


def mask_from_sparsity(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask removing exactly ``round(sparsity * n)`` smallest-magnitude weights.

    Among equal magnitudes the lower flat (row-major) index goes first, so the result does not
    depend on the selection algorithm.
    """
    return _keep_largest({"w": weight.detach().abs()}, sparsity)["w"]


def global_masks(weights: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """One magnitude threshold across all layers, removing ``round(sparsity * total)`` weights.

    Ties are broken by dict order, then flat index.
    """
    return _keep_largest({n: w.detach().abs() for n, w in weights.items()}, sparsity)


def _keep_largest(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    sparsity = _check_fraction(sparsity, "sparsity")
    if not scores:
        return {}
    flat = torch.cat([s.flatten().float() for s in scores.values()])
    n_remove = int(math.floor(sparsity * flat.numel() + 0.5))  # halves up; round() is banker's
    if n_remove == 0:
        keep = torch.ones_like(flat, dtype=torch.bool)
    else:
        # kthvalue is a linear-time selection; argsort of a 100M-weight VGG layer is far slower.
        pivot = flat.kthvalue(n_remove).values
        keep = flat > pivot
        ties = (flat == pivot).nonzero().flatten()
        keep[ties[n_remove - int((flat < pivot).sum()):]] = True
    sizes = [s.numel() for s in scores.values()]
    return {name: part.view_as(s) for (name, s), part in zip(scores.items(), keep.split(sizes))}


def sparsity_schedule(final_targets: dict[str, float], rounds: int) -> list[dict[str, float]]:
    """Per-round sparsity targets for iterative pruning, ending exactly at ``final_targets``.

    Geometric in the kept fraction: round ``t`` of ``T`` keeps ``(1 - final) ** (t / T)``, so every
    round removes the same share of the surviving weights. A linear ramp would make the last rounds
    of a 99%-sparse layer remove most of what is left in one go.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}.")
    for name, s in final_targets.items():
        _check_fraction(s, f"target sparsity of {name!r}")
    schedule = [{name: 1.0 - (1.0 - s) ** (t / rounds) for name, s in final_targets.items()}
                for t in range(1, rounds)]
    return schedule + [{name: float(s) for name, s in final_targets.items()}]


def further_schedule(planned: dict[str, float], keep: float, rounds: int) -> list[dict[str, float]]:
    """Targets for ``rounds`` rounds past the plan, each keeping ``keep`` of every pruned layer's survivors.

    A layer the plan keeps whole (sparsity 0) stays whole: the plan found no room in it. Round ``e``
    keeps ``(1 - planned) * keep ** e`` of a layer; ``pipeline.prune_and_retrain`` stops at the first
    round that validation does not allow, so these are a floor, reached only when accuracy allows.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"rounds must be an integer >= 0, got {rounds!r}.")
    if not 0 < keep < 1:
        raise ValueError(f"keep must be a fraction in (0, 1), got {keep!r}.")
    for name, s in planned.items():
        _check_fraction(s, f"planned sparsity of {name!r}")
    return [{name: 1.0 - (1.0 - s) * keep ** e if s > 0 else 0.0 for name, s in planned.items()}
            for e in range(1, rounds + 1)]


class _ZeroPrunedInPlace(torch.autograd.Function):
    """Forward: zero the pruned entries of ``original`` in place and return it (as a view).

    The write goes through ``.data`` so that it does not bump ``original``'s version counter: it
    only ever turns entries an optimizer step moved back into the zeros they were, so a graph that
    saved the weight before (several forwards before one backward) still sees the same values.
    """

    @staticmethod
    def forward(ctx, original, multiplier):
        original.data.mul_(multiplier)
        return original.view_as(original)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class Mask(nn.Module):
    """Parametrization ``weight = original * mask``; the bool mask is a buffer (in the state_dict)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.detach().to(torch.bool).clone())
        self._multiplier = None  # (bool tensor it came from, its _version, copy in weight dtype)

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return _ZeroPrunedInPlace.apply(original, self._mask_as(original.dtype))

    def _mask_as(self, dtype: torch.dtype) -> torch.Tensor:
        # On CPU float * bool goes through a slow mixed-dtype loop (about 2x a float * float
        # multiply), so keep a copy in the weight's dtype. The bool buffer stays the single source
        # of truth: in-place changes (load_state_dict, apply_masks) bump its _version and .to()
        # replaces it, either of which refreshes the copy.
        cached = self._multiplier
        if (cached is None or cached[0] is not self.mask or cached[1] != self.mask._version
                or cached[2].dtype != dtype):
            # A copy made under inference_mode could not be saved for a later backward.
            with torch.inference_mode(False), torch.no_grad():
                cached = (self.mask, self.mask._version, self.mask.to(dtype))
            self._multiplier = cached
        return cached[2]


def _mask_module(layer: nn.Module) -> Mask | None:
    if not parametrize.is_parametrized(layer, "weight"):
        return None
    return next((p for p in layer.parametrizations.weight if isinstance(p, Mask)), None)


def _resolve_layers(model: nn.Module, names) -> dict[str, nn.Module]:
    layers = compressible_layers(model)
    unknown = [n for n in names if n not in layers]
    if unknown:
        raise ValueError(f"Unknown layer(s) {unknown}; prunable layers are {list(layers)}.")
    return {n: layers[n] for n in names}


def _per_layer(model: nn.Module, value, what: str, check) -> dict[str, float]:
    """Expand a float to every compressible layer, or validate a {layer: value} dict."""
    if isinstance(value, dict):
        _resolve_layers(model, value)
        return {n: check(v, f"{what} of {n!r}") for n, v in value.items()}
    value = check(value, what)
    return {n: value for n in compressible_layers(model)}


def _dense_weight(layer: nn.Module) -> torch.Tensor:
    if parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original
    return layer.weight


def _pruning_scores(layer: nn.Module) -> torch.Tensor:
    """|effective weight|, with already-pruned weights ranked below everything (removed first)."""
    scores = _dense_weight(layer).detach().abs().float()  # abs() made a copy: safe to fill
    mask = _mask_module(layer)
    if mask is not None:
        scores.masked_fill_(~mask.mask, -1.0)
    return scores


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Register masks on the named layers, or overwrite the mask of already-masked layers.

    Calling it again replaces the mask; it does not AND with the old one (the ``prune_*`` functions
    below do, so they never revive a weight). Weights a looser mask lets back in start at exactly
    zero: the old mask is applied to ``original`` first, whatever an optimizer step left there.
    """
    layers = _resolve_layers(model, masks)
    for name, layer in layers.items():  # check everything first: never leave a model half-masked
        if tuple(masks[name].shape) != tuple(_dense_weight(layer).shape):
            raise ValueError(f"Mask for {name!r} has shape {tuple(masks[name].shape)}, "
                             f"weight has {tuple(_dense_weight(layer).shape)}.")
    for name, layer in layers.items():
        existing = _mask_module(layer)
        new = masks[name].detach().to(device=_dense_weight(layer).device, dtype=torch.bool)
        if existing is None:
            parametrize.register_parametrization(layer, "weight", Mask(new))
        else:
            with torch.no_grad():
                layer.parametrizations.weight.original.mul_(existing.mask)
            existing.mask.copy_(new)


def current_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the masks of the masked layers (unmasked layers are absent)."""
    found = {name: _mask_module(layer) for name, layer in compressible_layers(model).items()}
    return {name: m.mask.clone() for name, m in found.items() if m is not None}


@torch.no_grad()
def prune_by_quality(model: nn.Module, quality) -> dict[str, torch.Tensor]:
    """Remove ``|w| <= quality * std(w)`` per layer; ``quality`` is a float or {layer: quality}."""
    qualities = _per_layer(model, quality, "quality", _check_non_negative)
    layers = _resolve_layers(model, qualities)
    # layer.weight is the effective weight, zero where already pruned, and |0| > t never holds:
    # re-pruning cannot revive anything.
    masks = {name: mask_from_quality(layer.weight, qualities[name]) for name, layer in layers.items()}
    apply_masks(model, masks)
    return masks


@torch.no_grad()
def prune_to_sparsity(model: nn.Module, sparsity) -> dict[str, torch.Tensor]:
    """Prune each layer to the given sparsity (float for all layers, or {layer: sparsity}).

    Already-pruned weights count towards the target and stay pruned; a target below the current
    sparsity leaves the layer as it is.
    """
    targets = _per_layer(model, sparsity, "sparsity", _check_fraction)
    layers = _resolve_layers(model, targets)
    masks = {}
    for name, layer in layers.items():
        scores = _pruning_scores(layer)
        masks[name] = _keep_largest({name: scores}, targets[name])[name] & (scores >= 0)
    apply_masks(model, masks)
    return masks


@torch.no_grad()
def prune_globally(model: nn.Module, sparsity: float, layers=None) -> dict[str, torch.Tensor]:
    """One magnitude threshold across ``layers`` (default: all compressible) for an overall sparsity."""
    chosen = _resolve_layers(model, layers if layers is not None else compressible_layers(model))
    scores = {name: _pruning_scores(layer) for name, layer in chosen.items()}
    masks = {name: m & (scores[name] >= 0) for name, m in _keep_largest(scores, sparsity).items()}
    apply_masks(model, masks)
    return masks


def kept_fractions(model: nn.Module) -> dict[str, float]:
    """Fraction of each compressible layer's weights its mask keeps (1.0 for unmasked layers)."""
    found = {name: _mask_module(layer) for name, layer in compressible_layers(model).items()}
    return {name: 1.0 if m is None else m.mask.count_nonzero().item() / m.mask.numel()
            for name, m in found.items()}


def total_kept_fraction(model: nn.Module) -> float:
    """Kept weights / all weights over the compressible layers (biases excluded)."""
    sizes = {n: _dense_weight(layer).numel() for n, layer in compressible_layers(model).items()}
    fractions = kept_fractions(model)
    total = sum(sizes.values())
    return sum(fractions[n] * size for n, size in sizes.items()) / total if total else 1.0


def masked_gradients(model: nn.Module) -> None:
    """Zero the gradient of pruned weights in place (the backward pass leaves it dense).

    Call it between ``backward()`` and gradient clipping by norm, so the norm is the pruned
    network's; plain training does not need it.
    """
    for layer in compressible_layers(model).values():
        mask = _mask_module(layer)
        grad = layer.parametrizations.weight.original.grad if mask is not None else None
        if grad is not None:
            grad.mul_(mask._mask_as(grad.dtype))


def remove_masks(model: nn.Module, layers=None) -> None:
    """Bake ``original * mask`` into a plain ``weight`` parameter (before quantization or export).

    The Parameter object is kept (zeroed in place), so optimizers holding it stay valid.
    """
    chosen = _resolve_layers(model, layers if layers is not None else compressible_layers(model))
    for layer in chosen.values():
        mask = _mask_module(layer)
        if mask is None:
            continue
        original = layer.parametrizations.weight.original
        with torch.no_grad():
            original.mul_(mask.mask)
        if set(layer.parametrizations) != {"weight"} or len(layer.parametrizations.weight) != 1:
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
            continue
        # Not remove_parametrizations: a deepcopy shares the injected Parametrized* class, and
        # removal deletes the weight property from that class, breaking the other copy.
        layer.__class__ = layer.__class__.__bases__[0]
        del layer._modules["parametrizations"]
        layer.weight = original


_MASK_KEY = re.compile(r"^(.*)\.parametrizations\.weight\.0\.mask$")


def prepare_for_state_dict(model: nn.Module, state_dict: dict) -> None:
    """Create the parametrizations a pruned checkpoint expects, so ``load_state_dict`` matches keys."""
    masks = {m.group(1): value for key, value in state_dict.items() if (m := _MASK_KEY.match(key))}
    layers = _resolve_layers(model, masks)
    apply_masks(model, {n: m for n, m in masks.items() if _mask_module(layers[n]) is None})


def load_pruned_state_dict(model: nn.Module, state_dict: dict, strict: bool = True):
    """``prepare_for_state_dict`` then ``model.load_state_dict``; masks come from the checkpoint."""
    prepare_for_state_dict(model, state_dict)
    return model.load_state_dict(state_dict, strict=strict)
