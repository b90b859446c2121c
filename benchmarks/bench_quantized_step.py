"""Training-step cost of a weight-shared AlexNet (codebook parametrization) vs a plain one, on CPU.

AlexNet, 23 classes, 64 px, batch 32; the quantized copy is pruned to ~10% of its weights (per-layer
top-|w|, generated here rather than through ``helpers.pruning``) and quantized to 8 bits (conv) /
5 bits (fc). Its step rebuilds every dense weight from the codebook (scatter of survivors), and the
backward sums the weight gradient per cluster (bincount); SGD then updates only codebooks and
biases instead of 57M weights and their momentum. Run: ``python benchmarks/bench_quantized_step.py``.
The last printed line is JSON.
"""

from __future__ import annotations

import json
import statistics
import time

import torch
from torch import nn

from helpers import models
from helpers.quantization import distinct_values, quantize_model

NUM_CLASSES, IMAGE_SIZE, BATCH, DENSITY = 23, 64, 32, 0.1
WARMUP, STEPS = 2, 10


def make_step(model, x, y):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    def step():
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


@torch.no_grad()
def prune_top_magnitude(model, density):
    for module in models.compressible_layers(model).values():
        w = module.weight
        keep = max(1, int(round(density * w.numel())))
        threshold = w.abs().reshape(-1).kthvalue(w.numel() - keep + 1).values
        w.mul_(w.abs() >= threshold)


def main():
    torch.manual_seed(0)
    x = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE)
    y = torch.randint(0, NUM_CLASSES, (BATCH,))
    plain = models.create("alexnet", NUM_CLASSES, 3, IMAGE_SIZE)
    quantized = models.create("alexnet", NUM_CLASSES, 3, IMAGE_SIZE)
    quantized.load_state_dict(plain.state_dict())
    prune_top_magnitude(quantized, DENSITY)
    start = time.perf_counter()
    quantize_model(quantized, conv_bits=8, fc_bits=5)
    print(f"threads={torch.get_num_threads()} quantize_model {time.perf_counter() - start:.2f}s "
          f"distinct={distinct_values(quantized)}")

    # Alternate single steps of the two models so that load from other users of the machine
    # (2 shared cores) hits both alike.
    plain_step, quant_step = make_step(plain, x, y), make_step(quantized, x, y)
    for _ in range(WARMUP):
        plain_step(), quant_step()
    plain_t, quant_t = [], []
    for _ in range(STEPS):
        plain_t.append(plain_step())
        quant_t.append(quant_step())
    print("plain     step s:", " ".join(f"{t:.3f}" for t in plain_t))
    print("quantized step s:", " ".join(f"{t:.3f}" for t in quant_t))
    plain_s, quant_s = statistics.median(plain_t), statistics.median(quant_t)
    print(json.dumps({"plain_step_s": round(plain_s, 4), "quantized_step_s": round(quant_s, 4),
                      "ratio": round(quant_s / plain_s, 3)}))


if __name__ == "__main__":
    main()
