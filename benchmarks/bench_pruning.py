"""Training-step cost of a pruned AlexNet (mask parametrization) vs a plain one, on CPU.

Pruned weights are still stored and multiplied densely: the mask adds ``original * mask`` to the
forward pass and ``grad * mask`` to the backward pass, two elementwise passes over every weight,
which is what this measures. Run ``python benchmarks/bench_pruning.py``; the last line is JSON.
"""

from __future__ import annotations

import json
import statistics
import time

import torch
from torch import nn

from helpers import models, pruning

NUM_CLASSES, IMAGE_SIZE, BATCH, SPARSITY = 23, 64, 32, 0.9
WARMUP, STEPS = 3, 5


def make_step(model, x, y):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    model.train()

    def step():
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


def main():
    torch.manual_seed(0)
    x = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE)
    y = torch.randint(0, NUM_CLASSES, (BATCH,))
    plain = models.create("alexnet", NUM_CLASSES, 3, IMAGE_SIZE)
    pruned = models.create("alexnet", NUM_CLASSES, 3, IMAGE_SIZE)
    pruned.load_state_dict(plain.state_dict())
    pruning.prune_to_sparsity(pruned, SPARSITY)
    print(f"threads={torch.get_num_threads()} weights={models.count_parameters(plain):,} "
          f"kept={pruning.total_kept_fraction(pruned):.3f}")

    plain_step, pruned_step = make_step(plain, x, y), make_step(pruned, x, y)
    for _ in range(WARMUP):
        plain_step(), pruned_step()
    # Alternate the two so that load from other users of a shared machine hits both alike.
    plain_t, pruned_t = [], []
    for _ in range(STEPS):
        plain_t.append(plain_step())
        pruned_t.append(pruned_step())
    print("plain  step s:", " ".join(f"{t:.3f}" for t in plain_t))
    print("pruned step s:", " ".join(f"{t:.3f}" for t in pruned_t))
    plain_s, pruned_s = statistics.median(plain_t), statistics.median(pruned_t)
    print(json.dumps({"plain_step_s": round(plain_s, 4), "pruned_step_s": round(pruned_s, 4),
                      "ratio": round(pruned_s / plain_s, 3)}))


if __name__ == "__main__":
    main()
