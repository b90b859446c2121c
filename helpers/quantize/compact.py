"""The last fp32 values a small model pays for: codebooks to float16, biases to int8, normalization
tensors to float16, where free.

After pruning and quantization a LeNet's file is ~20 KB, and what is still stored as fp32 starts
to count: LeNet-5's 580 biases are 2,320 B (int8: 580 B) and its two 8-bit conv codebooks up to
1 KB each (float16: half). The roundings change weights, so they are trials: ``compact`` rounds
one kind, measures validation accuracy, and keeps the rounding only when accuracy does not drop
(``tolerance``, default 0: nil loss); else the exact values come back. A compressed network with
BatchNorm pays for its normalization tensors too: EfficientNet-Lite0's 84,032 values are 336 KB
of a 1.66 MB file in float32, and float16 took that file to 1.49 MB at the same accuracy
(docs/format.md, ``benchmarks/bench_small_bytes.py``).

The file format stores what the rounding leaves without further loss: a codebook whose entries
are all exact in float16 as float16 (``fileformat._codebook_entry``, "auto"), a float32 tensor
whose values are all int8 x 2**e as int8 plus e (``fileformat.int8_exponent``). A power-of-two
scale, not a free float one, so that rounding here and reading there agree to the bit.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..coding import fileformat
from .. import models
from . import quantization


def round_to_int8_grid(values: torch.Tensor) -> torch.Tensor:
    """``values`` rounded to the nearest ``q * 2**e`` (int8 ``q`` in [-127, 127], the finest ``e``
    that holds the largest magnitude): what ``fileformat`` then stores in one byte per value."""
    peak = float(values.detach().abs().max()) if values.numel() else 0.0
    if peak == 0.0 or not torch.isfinite(values).all():
        return values.detach().clone()
    exponent = fileformat.finest_int8_exponent(peak)
    scaled = torch.ldexp(values.detach().float(), torch.tensor(-exponent, dtype=torch.float32))
    return torch.ldexp(scaled.round().clamp(-127, 127), torch.tensor(exponent, dtype=torch.float32)).to(values.dtype)


def _biases(model: nn.Module) -> list[torch.Tensor]:
    return [layer.bias for layer in models.compressible_layers(model).values()
            if getattr(layer, "bias", None) is not None and layer.bias.dtype == torch.float32]


def _codebooks(model: nn.Module) -> list[torch.Tensor]:
    """Each weight-shared layer's codebook (its parametrization's ``original``, see ``SharedWeight``)."""
    return [layer.parametrizations.weight.original for layer in models.compressible_layers(model).values()
            if quantization._shared(layer) is not None]


def _round_half(values: torch.Tensor) -> torch.Tensor:
    finite = torch.isfinite(values.detach().half()).all()
    return values.detach().half().float() if finite else values.detach().clone()


# every public normalization layer whose affine parameters and running statistics are float32 tensors
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
         nn.InstanceNorm3d, nn.LayerNorm, nn.GroupNorm)


def _norms(model: nn.Module) -> list[torch.Tensor]:
    """The float32 parameters and buffers (weight, bias, running_mean, running_var) of its normalization layers."""
    return [t for module in model.modules() if isinstance(module, NORMS)
            for t in (*module.parameters(recurse=False), *module.buffers(recurse=False))
            if t.dtype == torch.float32 and t.numel()]


KINDS = {"biases": (_biases, round_to_int8_grid), "codebooks": (_codebooks, _round_half),
         "norms": (_norms, _round_half)}


def compact(model: nn.Module, evaluate: Callable[[nn.Module], float], tolerance: float = 0.0,
            kinds=("codebooks", "biases", "norms"), accuracy: float | None = None) -> dict:
    """Round each kind in turn, keep it when ``evaluate(model)`` stays within ``tolerance`` of before.

    ``model`` is quantized (``quantization.quantize_model``); changed in place. ``accuracy``: what
    ``evaluate(model)`` gives now, if the caller has it (saves one evaluation). Returns per kind
    ``{"kept", "accuracy_before", "accuracy_after", "values"}``.
    """
    record = {}
    for kind in kinds:
        find, rounding = KINDS[kind]
        tensors = find(model)
        if not tensors:
            continue
        before = evaluate(model) if accuracy is None else accuracy
        exact = [t.detach().clone() for t in tensors]
        with torch.no_grad():
            for t in tensors:
                t.copy_(rounding(t))
        after = evaluate(model)
        kept = after >= before - tolerance
        if not kept:
            with torch.no_grad():
                for t, value in zip(tensors, exact):
                    t.copy_(value)
        record[kind] = {"kept": kept, "accuracy_before": before, "accuracy_after": after,
                        "values": sum(t.numel() for t in tensors)}
        accuracy = after if kept else before  # the model's accuracy now: the next kind's "before"
    return record
