"""Shared timing for the training-step benchmarks: alternate two models' SGD steps on one batch."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


def make_step(model, x, y):
    """One timed SGD step (momentum, weight decay) of ``model`` on the batch ``(x, y)``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    model.train()

    def step():
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


def compare_steps(plain, other, x, y, warmup: int, steps: int, names=("plain", "other")) -> tuple[float, float]:
    """Median step seconds of ``plain`` and ``other``, printing every step.

    The two alternate step by step so that load from other users of a shared machine hits both alike.
    """
    plain_step, other_step = make_step(plain, x, y), make_step(other, x, y)
    for _ in range(warmup):
        plain_step(), other_step()
    plain_t, other_t = [], []
    for _ in range(steps):
        plain_t.append(plain_step())
        other_t.append(other_step())
    width = max(map(len, names))
    for name, times in zip(names, (plain_t, other_t)):
        print(f"{name:<{width}} step s:", " ".join(f"{t:.3f}" for t in times))
    return statistics.median(plain_t), statistics.median(other_t)


def print_ratio(plain_s: float, other_s: float, other: str) -> None:
    """The benchmark's last line: both median step times and their ratio, as JSON."""
    import json

    print(json.dumps({"plain_step_s": round(plain_s, 4), f"{other}_step_s": round(other_s, 4),
                      "ratio": round(other_s / plain_s, 3)}))


def alexnet_batch_and_pair(num_classes: int, image_size: int, batch: int, sparsity: float):
    """A random batch and two AlexNets with the same weights, the second pruned to ``sparsity``."""
    from helpers import models
    from helpers.prune import pruning

    torch.manual_seed(0)
    x = torch.randn(batch, 3, image_size, image_size)
    y = torch.randint(0, num_classes, (batch,))
    plain = models.create("alexnet", num_classes, 3, image_size)
    pruned = models.create("alexnet", num_classes, 3, image_size)
    pruned.load_state_dict(plain.state_dict())
    pruning.prune_to_sparsity(pruned, sparsity)
    return x, y, plain, pruned
