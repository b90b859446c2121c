"""Training-step cost of a pruned AlexNet (mask parametrization) vs a plain one, on CPU.

Pruned weights are still stored and multiplied densely. The mask adds one in-place pass per
forward (zeroing the pruned entries of the dense weight); the backward pass is straight-through.
Run ``python benchmarks/bench_pruning.py`` on an otherwise idle machine; the last line is JSON.
"""

from __future__ import annotations

import torch

from helpers import models
from helpers.prune import pruning
from steps import alexnet_batch_and_pair, compare_steps, print_ratio

NUM_CLASSES, IMAGE_SIZE, BATCH, SPARSITY = 23, 64, 32, 0.9
WARMUP, STEPS = 3, 5


def main():
    x, y, plain, pruned = alexnet_batch_and_pair(NUM_CLASSES, IMAGE_SIZE, BATCH, SPARSITY)
    print(f"threads={torch.get_num_threads()} weights={models.count_parameters(plain):,} "
          f"kept={pruning.total_kept_fraction(pruned):.3f}")

    plain_s, pruned_s = compare_steps(plain, pruned, x, y, WARMUP, STEPS, ("plain", "pruned"))
    print_ratio(plain_s, pruned_s, "pruned")


if __name__ == "__main__":
    main()
