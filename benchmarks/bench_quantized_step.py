"""Training-step cost of a weight-shared AlexNet (codebook parametrization) vs a plain one, on CPU.

AlexNet, 23 classes, 64 px, batch 32; the quantized copy is pruned to ~10% of its weights (per-layer
``helpers.prune.pruning.prune_to_sparsity``) and quantized to 8 bits (conv) /
5 bits (fc). Its step rebuilds every dense weight from the codebook (scatter of survivors), and the
backward sums the weight gradient per cluster (bincount); SGD then updates only codebooks and
biases instead of 57M weights and their momentum. Run: ``python benchmarks/bench_quantized_step.py``.
The last printed line is JSON.
"""

from __future__ import annotations

import time

import torch

from helpers.quantize.quantization import distinct_values, quantize_model
from steps import alexnet_batch_and_pair, compare_steps, print_ratio

NUM_CLASSES, IMAGE_SIZE, BATCH, DENSITY = 23, 64, 32, 0.1
WARMUP, STEPS = 2, 10


def main():
    x, y, plain, quantized = alexnet_batch_and_pair(NUM_CLASSES, IMAGE_SIZE, BATCH, 1 - DENSITY)
    start = time.perf_counter()
    quantize_model(quantized, conv_bits=8, fc_bits=5)
    print(f"threads={torch.get_num_threads()} quantize_model {time.perf_counter() - start:.2f}s "
          f"distinct={distinct_values(quantized)}")

    plain_s, quant_s = compare_steps(plain, quantized, x, y, WARMUP, STEPS, ("plain", "quantized"))
    print_ratio(plain_s, quant_s, "quantized")


if __name__ == "__main__":
    main()
