"""Time of the 1-D k-means over every compressible layer of a pruned 23-class VGG16, on CPU.

Weights are random (torchvision's init), pruned per layer by magnitude to the paper's Table 5
densities; conv layers get 256 clusters (8 bits), fc layers 32 (5 bits). ``kmeans_s`` times
``kmeans_1d`` on the surviving values (the target: <= 2 s on 2 cores); ``cluster_weight_s`` adds
extracting the survivors and building the int64 index tensors of ``QuantizedLayer``.
Run: ``python benchmarks/bench_kmeans.py``. The last printed line is JSON.
"""

from __future__ import annotations

import json
import time

import torch

from helpers import models
from helpers.quantize.quantization import cluster_weight, kmeans_1d

# Han et al. 2016, Table 5: fraction of weights kept per VGG16 layer after pruning.
DENSITY = [0.58, 0.22, 0.34, 0.36, 0.53, 0.24, 0.42, 0.32, 0.27, 0.34, 0.35, 0.29, 0.36,  # conv1_1..5_3
           0.01, 0.02, 0.09]                                                                # fc6..fc8


def pruned_weight(weight: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``density`` fraction of largest-|w| entries (kthvalue threshold; ties may keep a few more)."""
    flat = weight.detach().abs().reshape(-1)
    drop = int(round((1 - density) * flat.numel()))
    if drop == 0:
        return weight.detach().clone()
    threshold = flat.kthvalue(drop).values
    return weight.detach() * (weight.detach().abs() > threshold)


def main():
    torch.manual_seed(0)
    model = models.create("vgg16", 23, image_size=32)
    layers = models.compressible_layers(model)
    assert len(layers) == len(DENSITY), list(layers)
    weights = {name: pruned_weight(m.weight, d) for (name, m), d in zip(layers.items(), DENSITY)}
    bits = {name: 8 if isinstance(m, torch.nn.Conv2d) else 5 for name, m in layers.items()}
    del model, layers
    survivors = {name: w[w != 0] for name, w in weights.items()}
    total = sum(s.numel() for s in survivors.values())
    print(f"threads={torch.get_num_threads()} survivors={total:,}")

    start = time.perf_counter()
    for name, s in survivors.items():
        t0 = time.perf_counter()
        centroids, _ = kmeans_1d(s, 2 ** bits[name], init="linear")
        print(f"  {name:14s} n={s.numel():>9,} k={centroids.size:>3} {time.perf_counter() - t0:.3f}s")
    kmeans_s = time.perf_counter() - start

    start = time.perf_counter()
    for name, w in weights.items():
        cluster_weight(w, bits[name], init="linear")
    cluster_s = time.perf_counter() - start
    print(json.dumps({"layers": len(weights), "survivors": total, "kmeans_s": round(kmeans_s, 3),
                      "cluster_weight_s": round(cluster_s, 3)}))


if __name__ == "__main__":
    main()
