"""How much to prune each layer: the sensitivity scan and the split of a kept-weight budget (paper
section 2, Fig. 6; notebook 03).

``sensitivity_scan`` prunes one layer at a time over a grid of sparsities and records a metric;
``allocate_budget`` turns the curves into per-layer targets that meet a budget of kept weights, by
one accuracy tolerance for every layer (``targets_for_budget``) or by accuracy lost per weight
removed (``targets_by_cost_per_weight``). The masks themselves are ``helpers.prune.pruning``.
"""

from __future__ import annotations

import torch
from torch import nn

from .pruning import (_check_fraction, _check_non_negative, _dense_weight, _keep_largest, _mask_module,
                      _pruning_scores, _resolve_layers, compressible_layers)

__all__ = ["sensitivity_scan", "targets_from_sensitivity", "kept_share", "targets_for_budget",
           "targets_by_cost_per_weight", "ALLOCATIONS", "allocate_budget"]


@torch.no_grad()
def sensitivity_scan(model: nn.Module, evaluate_fn, sparsities, layers=None
                     ) -> dict[str, list[tuple[float, float]]]:
    """Prune one layer at a time to each sparsity, record ``evaluate_fn(model)``, restore the layer.

    Existing masks are respected (ANDed) and restored; afterwards the model's state_dict is
    bit-identical to before, even if ``evaluate_fn`` raises. An unmasked layer is pruned by
    zeroing its weight in place (no mask appears while ``evaluate_fn`` runs).
    """
    grid = [_check_fraction(s, "sparsity") for s in sparsities]
    chosen = _resolve_layers(model, layers if layers is not None else compressible_layers(model))
    results = {}
    for name, layer in chosen.items():
        # Change tensors in place and copy them back, rather than adding and removing a
        # parametrization: re-registering would move the weight after the bias in parameters()
        # and the state_dict, and swap the module's class.
        # A masked layer's forward zeroes the pruned entries of ``original``, so keep it too.
        existing = _mask_module(layer)
        weight = _dense_weight(layer)
        saved_weight = weight.detach().clone()
        saved_mask = existing.mask.clone() if existing is not None else None
        scores = _pruning_scores(layer)
        results[name] = []
        try:
            for s in grid:
                keep = _keep_largest({name: scores}, s)[name] & (scores >= 0)
                if existing is not None:
                    existing.mask.copy_(keep)
                else:
                    weight.copy_(saved_weight.masked_fill(~keep, 0))
                results[name].append((s, float(evaluate_fn(model))))
        finally:
            weight.copy_(saved_weight)
            if existing is not None:
                existing.mask.copy_(saved_mask)
    return results


def targets_from_sensitivity(scan: dict[str, list[tuple[float, float]]], baseline_metric: float,
                             tolerance: float, max_sparsity: float = 0.99,
                             higher_is_better: bool = True) -> dict[str, float]:
    """Per layer, the largest scanned sparsity (<= ``max_sparsity``) still within ``tolerance``.

    Walks each curve upwards and stops at the first sparsity that breaks the tolerance: scan
    curves are noisy, and a lucky point past a failure is not a safe target. A layer whose
    smallest scanned sparsity already fails gets 0.0.
    """
    tolerance = _check_non_negative(tolerance, "tolerance")
    max_sparsity = _check_fraction(max_sparsity, "max_sparsity")
    targets = {}
    for name, curve in scan.items():
        best = 0.0
        for s, metric in sorted(curve):
            drop = baseline_metric - metric if higher_is_better else metric - baseline_metric
            if s > max_sparsity or drop > tolerance:
                break
            best = s
        targets[name] = best
    return targets


def kept_share(targets: dict[str, float], layer_sizes: dict[str, int]) -> float:
    """The fraction of all weights of the ``targets``' layers that their sparsities keep; 1.0 for no
    weights (a model whose every layer is kept whole: nothing is pruned, so nothing is lost)."""
    total = sum(layer_sizes[n] for n in targets)
    return sum(layer_sizes[n] * (1.0 - s) for n, s in targets.items()) / total if total else 1.0


def targets_for_budget(scan: dict[str, list[tuple[float, float]]], baseline_metric: float,
                       layer_sizes: dict[str, int], tolerance: float, max_kept: float,
                       max_sparsity: float = 0.99) -> tuple[dict[str, float], float | None]:
    """Per-layer targets from the sensitivity ``scan`` that meet a budget of kept weights, no harder.

    Uses ``targets_from_sensitivity`` at the smallest accuracy tolerance (among ``tolerance`` and the
    drops seen in the scan) whose targets keep at most ``max_kept`` of the weights: when
    ``tolerance`` would prune far past the budget it is lowered (single-layer drops add up when all
    layers are pruned together), when it misses the budget it is raised, so the layers that
    tolerate pruning best give up the most. Returns ``(targets, tolerance used)``, the tolerance
    ``None`` when even every layer at its largest scanned sparsity misses the budget.
    """
    max_kept = _check_fraction(max_kept, "max_kept")
    _check_non_negative(tolerance, "tolerance")
    drops = sorted({max(baseline_metric - m, 0.0) for curve in scan.values() for _, m in curve} | {tolerance})
    for t in drops:
        targets = targets_from_sensitivity(scan, baseline_metric, t, max_sparsity)
        if kept_share(targets, layer_sizes) <= max_kept:
            return targets, t
    return {n: max((s for s, _ in curve if s <= max_sparsity), default=0.0) for n, curve in scan.items()}, None


def targets_by_cost_per_weight(scan: dict[str, list[tuple[float, float]]], baseline_metric: float,
                               layer_sizes: dict[str, int], max_kept: float, max_sparsity: float = 0.99
                               ) -> tuple[dict[str, float], float | None]:
    """Per-layer targets that meet a budget of kept weights, spending accuracy where weights are cheap.

    ``targets_for_budget`` grants every layer the same accuracy tolerance, so a 2M-weight conv layer
    may lose as much as a 100M-weight fc layer while saving 50x fewer weights. Here, starting from no
    pruning, each step moves one layer to a larger scanned sparsity, the move with the smallest
    increase in its accuracy drop per weight removed, until at most ``max_kept`` of the weights are
    kept. A layer's drop is the largest seen at or below a sparsity (a lucky point past a worse one
    is not trusted). Being greedy, its last step may go well past the budget (one step of a 100M
    fc layer is millions of weights). Returns ``(targets, sum of the layers' single-layer drops)``; the sum is
    ``None`` when even every layer at its largest scanned sparsity misses the budget.
    """
    max_kept = _check_fraction(max_kept, "max_kept")
    max_sparsity = _check_fraction(max_sparsity, "max_sparsity")
    envelopes = {}
    for name, curve in scan.items():
        points, worst = [], 0.0
        for s, metric in sorted(curve):
            if s > max_sparsity:
                break
            worst = max(worst, baseline_metric - metric)
            points.append((s, worst))
        envelopes[name] = points
    targets, drops = dict.fromkeys(scan, 0.0), dict.fromkeys(scan, 0.0)
    while kept_share(targets, layer_sizes) > max_kept + 1e-12:
        best = None
        for name, points in envelopes.items():
            for s, drop in points:
                removed = layer_sizes[name] * (s - targets[name])
                if removed <= 0:
                    continue
                price = (drop - drops[name]) / removed
                if best is None or price < best[0]:
                    best = (price, name, s, drop)
        if best is None:
            return targets, None
        _, name, targets[name], drops[name] = best
    return targets, float(sum(drops.values()))


ALLOCATIONS = ("tolerance", "cost_per_weight")


def allocate_budget(allocation: str, scan: dict[str, list[tuple[float, float]]], baseline_metric: float,
                    layer_sizes: dict[str, int], tolerance: float, max_kept: float
                    ) -> tuple[dict[str, float], str | None]:
    """Per-layer targets by the named ``allocation`` (notebook 03): ``targets_for_budget`` for
    ``"tolerance"``, ``targets_by_cost_per_weight`` for ``"cost_per_weight"``.

    Returns ``(targets, how they were found)``, the second ``None`` when the budget is unreachable.
    """
    if allocation == "tolerance":
        targets, used = targets_for_budget(scan, baseline_metric, layer_sizes, tolerance, max_kept)
        return targets, None if used is None else f"tolerance used {used:.3f}"
    if allocation == "cost_per_weight":
        targets, drop = targets_by_cost_per_weight(scan, baseline_metric, layer_sizes, max_kept)
        return targets, None if drop is None else f"summed single-layer drop {drop:.3f}"
    raise ValueError(f"budget_allocation {allocation!r} is unknown; choose one of {', '.join(ALLOCATIONS)}.")
