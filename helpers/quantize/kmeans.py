"""1-D k-means, exact and fast: the clustering behind trained quantization's weight sharing (paper
section 3; ``helpers.quantize.quantization.cluster_weight`` calls it for each layer).

A pure function on arrays: sort once, then each Lloyd iteration is O(k log n) (see ``kmeans_1d``).
``benchmarks/bench_kmeans.py`` measures it on real layers.
"""

from __future__ import annotations

import operator

import numpy as np
import torch

INITS = ("linear", "density", "random")


def kmeans_1d(values, k: int, init: str = "linear", iters: int = 300, tol: float = 1e-6, seed=None):
    """Lloyd's k-means on scalars; returns ``(centroids float64 (k',), labels int64 (n,))``, k' <= k.

    In 1-D each cluster of a nearest-centroid assignment is a contiguous range of the sorted values,
    cut at the midpoints between neighbouring centroids. So we sort once (O(n log n)); each iteration is
    then ``searchsorted`` of the k-1 midpoints plus cluster means from a float64 prefix sum: O(k log n).
    Ties (a value exactly at a midpoint) go to the lower centroid, as in sklearn's argmin.

    ``init``: 'linear' = linspace(min, max, k) (the paper's best), 'density' = the values at evenly
    spaced CDF levels (i + 1/2) / k, 'random' = k values drawn without replacement (``seed``).
    Duplicate initial centroids are merged (they could never separate). An empty cluster keeps its
    old centroid (deterministic; it stays sorted between its neighbours and may catch points later).
    So with 'linear' init on pruned weights the centroids inside the pruning gap around zero start
    empty and mostly stay empty: fewer than k values end up in use.
    With at most k distinct values the centroids are exactly those values. Stops when the
    assignment no longer changes, no centroid moves more than ``tol * (max - min)``, or after
    ``iters`` iterations (300, sklearn's default); the labels are the nearest-centroid assignment of
    the returned centroids.
    """
    if init not in INITS:
        raise ValueError(f"Unknown k-means init {init!r}; choose one of {', '.join(INITS)}.")
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    x = np.asarray(values).ravel()
    k = operator.index(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    n = x.size
    if n == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    # Sort once (numpy's SIMD quicksort); labels are scattered back through the permutation.
    order = np.argsort(x)
    xs = x[order].astype(np.float64)  # accumulate in float64
    first = np.concatenate(([True], xs[1:] != xs[:-1]))
    if np.count_nonzero(first) <= k:  # every value gets its own centroid: exact, nothing to iterate
        labels = np.empty(n, dtype=np.int64)
        labels[order] = np.cumsum(first) - 1
        return xs[first], labels

    c = _initial_centroids(x, xs, k, init, seed)

    # Prefix sums of centred values: the centring keeps range sums free of cancellation error.
    mean = xs.mean()
    csum = np.concatenate(([0.0], np.cumsum(xs - mean)))
    span = xs[-1] - xs[0]
    cuts, prev = np.zeros(c.size + 1, dtype=np.int64), np.full(c.size + 1, -1, dtype=np.int64)
    cuts[-1] = n
    for _ in range(iters):  # small arrays only: per-iteration cost is numpy call overhead
        cuts[1:-1] = np.searchsorted(xs, (c[:-1] + c[1:]) * 0.5, side="right")
        if (cuts == prev).all():
            break  # assignment unchanged: c already holds its cluster means
        prev[:] = cuts
        counts = np.diff(cuts)
        new = np.where(counts > 0, mean + np.diff(csum[cuts]) / np.maximum(counts, 1), c)
        shift, c = np.abs(new - c).max(), new
        if shift <= tol * span:
            break
    return c, _sorted_labels(xs, c, order)


def _initial_centroids(x, xs, k: int, init: str, seed) -> np.ndarray:
    """Sorted, distinct starting centroids for ``kmeans_1d``: ``x`` the values, ``xs`` the same sorted
    in float64 (the random draw indexes ``x``, so a seed picks the same values as before sorting)."""
    if init == "linear":
        c = np.linspace(xs[0], xs[-1], k)
    elif init == "density":
        c = xs[np.round((np.arange(k) + 0.5) / k * (xs.size - 1)).astype(np.int64)]
    else:
        c = np.sort(x[np.random.default_rng(seed).choice(x.size, size=k, replace=False)]).astype(np.float64)
    return np.unique(c)


def _sorted_labels(xs, c, order):
    """Nearest-centroid labels in the original order: contiguous runs of the sorted values."""
    cuts = np.searchsorted(xs, (c[:-1] + c[1:]) * 0.5, side="right")
    counts = np.diff(np.concatenate(([0], cuts, [xs.size])))
    labels = np.empty(xs.size, dtype=np.int64)
    labels[order] = np.repeat(np.arange(c.size, dtype=np.int64), counts)
    return labels
