"""Per-layer bit widths chosen for the file size, with validation accuracy as the constraint.

The paper quantizes every convolution to 8 bits and every fc layer to 5 (its Fig. 7 shows where
accuracy starts to fall: ~4 bits for conv, ~2 for fc). One width per kind leaves bits on the table:
a network's largest layer, which dominates the file, often keeps its accuracy at fewer bits than
the small layers next to it. ``allocate_bits`` searches greedily:

1. start from the profile's widths (``conv_bits`` / ``fc_bits``) and measure accuracy on a fixed
   validation set (pipeline: the whole split) with every layer clustered (no fine-tuning): the reference;
2. take the layer whose next lower width saves the most bits in the file (survivors x one bit, so
   the largest layer first) and measure the whole allocation with it one bit narrower;
3. keep the narrower width when accuracy stays within ``tolerance`` of the reference (and, with
   ``loss_tolerance``, the loss within (1 + it) x the reference's), else freeze that layer at its
   width; repeat until every layer is frozen or at ``min_bits``.

Each trial clusters the whole model anew (k-means of every layer, ~0.1 s for LeNet-5), so the
accuracy measured is that of the allocation as a whole, not of one layer at a time. Centroid
fine-tuning (``pipeline.quantize``) comes after and usually wins back part of what the trials lost.
"""

from __future__ import annotations

import copy
from typing import Callable

from torch import nn

from .. import models
from . import quantization

BIT_ALLOCATIONS = ("fixed", "greedy")  # the profile's bit_allocation: one width per kind, or narrowed per layer

def default_bits(model: nn.Module, conv_bits: int, fc_bits: int, depthwise_bits: int | None = None) -> dict[str, int]:
    """The paper's allocation: ``conv_bits`` for every Conv2d, ``fc_bits`` for every Linear; and
    ``depthwise_bits``, when given, for the depthwise convolutions (``models.is_depthwise``)."""
    return {name: depthwise_bits if depthwise_bits is not None and models.is_depthwise(layer) else
            conv_bits if isinstance(layer, nn.Conv2d) else fc_bits
            for name, layer in models.compressible_layers(model).items()}


def survivor_counts(model: nn.Module) -> dict[str, int]:
    """Nonzero weights per compressible layer: what one bit less of that layer saves in the file."""
    return {name: int((layer.weight != 0).sum()) for name, layer in models.compressible_layers(model).items()}


def quantized_accuracy(model: nn.Module, bits: dict[str, int], evaluate: Callable[[nn.Module], float | dict]):
    """``evaluate`` of a copy of ``model`` with every layer clustered to ``bits`` (``model`` is untouched)."""
    trial = copy.deepcopy(model)
    quantization.quantize_model(trial, bits=bits, init="linear")
    return evaluate(trial)


def _accuracy_and_loss(result) -> tuple[float, float | None]:
    return (result["top1"], result["loss"]) if isinstance(result, dict) else (result, None)


def allocate_bits(model: nn.Module, evaluate: Callable[[nn.Module], float | dict], start: dict[str, int],
                  tolerance: float, min_bits: int = 2,
                  loss_tolerance: float | None = None) -> tuple[dict[str, int], list[dict]]:
    """Greedy narrowing of ``start`` (layer -> bits) while ``evaluate`` stays within ``tolerance``.

    ``evaluate(model)``: an accuracy (a fraction, higher is better), or ``training.evaluate``'s dict
    (``top1`` and ``loss``: needed for ``loss_tolerance``). Returns the allocation and the trials
    made (``{"layer", "bits", "accuracy", "loss", "kept"}``; the first has layer None: the reference).
    """
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be an accuracy fraction in [0, 1), got {tolerance!r}")
    if not isinstance(min_bits, int) or min_bits < 1:
        raise ValueError(f"min_bits must be an integer >= 1, got {min_bits!r}")
    if loss_tolerance is not None and not loss_tolerance >= 0:
        raise ValueError(f"loss_tolerance must be >= 0 or None, got {loss_tolerance!r}")
    bits = dict(start)
    survivors = survivor_counts(model)
    reference, reference_loss = _accuracy_and_loss(quantized_accuracy(model, bits, evaluate))
    if loss_tolerance is not None and reference_loss is None:
        raise ValueError("loss_tolerance needs an evaluate that returns a dict with 'top1' and 'loss'")
    trials = [{"layer": None, "bits": dict(bits), "accuracy": reference, "loss": reference_loss, "kept": True}]
    frozen = {name for name, b in bits.items() if b <= min_bits or survivors.get(name, 0) == 0}
    while len(frozen) < len(bits):
        name = max((n for n in bits if n not in frozen), key=lambda n: (survivors[n], n))
        candidate = {**bits, name: bits[name] - 1}
        accuracy, loss = _accuracy_and_loss(quantized_accuracy(model, candidate, evaluate))
        kept = accuracy >= reference - tolerance and (loss_tolerance is None
                                                      or loss <= reference_loss * (1 + loss_tolerance))
        trials.append({"layer": name, "bits": candidate[name], "accuracy": accuracy, "loss": loss, "kept": kept})
        if kept:
            bits = candidate
        if not kept or bits[name] <= min_bits:
            frozen.add(name)
    return bits, trials


def bits_saved(start: dict[str, int], chosen: dict[str, int], survivors: dict[str, int]) -> int:
    """Index bits the allocation saves over ``start`` (before entropy coding: an upper estimate)."""
    return sum((start[n] - chosen[n]) * survivors.get(n, 0) for n in start)
