"""When to stop pruning: compare a pruned model with its baseline on the *same* validation images.

Rounds past the plan (``extra_rounds``) go on while the pruned model is no worse than the baseline
by more than a tolerance. Judged on two accuracies alone, that gate is a coin toss: with ~1,700
validation images one accuracy has a standard error of ~1.2 points. Issue 26 measured the README's
LeNet-5 ``cpu`` run stopping after its planned rounds on 1 thread (validation 1.03 points under the
baseline, tolerance 0.5) but going on to round 5 on 2 threads: 45.4x against 52.9x, from the same
data and seed, at the same test accuracy.

Both models classify the same images, so most of that noise cancels in their *paired* difference:
per image, ``d = candidate right - baseline right`` is -1, 0 or +1, and only the images where the
two disagree carry information. The mean of ``d`` is the accuracy difference; its standard error
comes from the number of disagreements (``paired_difference``); McNemar's exact test on the same
counts is recorded beside it as evidence (``mcnemar_p``).

The rule (``decide``): a round is refused when its paired difference is more than ``z`` standard
errors below ``-tolerance``, i.e. when the validation set shows, beyond its own noise, a loss
larger than the tolerance. ``z=None`` is the former point-estimate rule (difference >= -tolerance).
Counts are integers summed over images, so the decision does not depend on the order of the
validation images or on the batch size they are evaluated in (``tests/test_stopping.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..placement import to_device


@dataclass(frozen=True)
class PairedCounts:
    """How two models did on the same images: the four agreement counts and each model's mean loss."""
    images: int
    both_right: int
    only_baseline_right: int   # the baseline right, the candidate wrong
    only_candidate_right: int  # the candidate right, the baseline wrong
    baseline_loss: float
    candidate_loss: float

    def __post_init__(self):
        counts = (self.images, self.both_right, self.only_baseline_right, self.only_candidate_right)
        if min(counts) < 0 or sum(counts[1:]) > self.images:
            raise ValueError(f"inconsistent paired counts {counts}: each >= 0 and together at most the images.")
        if self.images == 0:
            raise ValueError("paired counts over no images: the validation split is empty.")

    @property
    def baseline_accuracy(self) -> float:
        return (self.both_right + self.only_baseline_right) / self.images

    @property
    def candidate_accuracy(self) -> float:
        return (self.both_right + self.only_candidate_right) / self.images


def counts_from_correct(baseline_correct: torch.Tensor, candidate_correct: torch.Tensor,
                        baseline_loss: float = float("nan"), candidate_loss: float = float("nan")) -> PairedCounts:
    """``PairedCounts`` from two boolean vectors of per-image correctness (the same images, same order)."""
    if baseline_correct.shape != candidate_correct.shape or baseline_correct.dim() != 1:
        raise ValueError(f"per-image correctness vectors must be 1-D and of one length, got "
                         f"{tuple(baseline_correct.shape)} and {tuple(candidate_correct.shape)}.")
    base, cand = baseline_correct.bool(), candidate_correct.bool()
    return PairedCounts(images=int(base.numel()), both_right=int((base & cand).sum()),
                        only_baseline_right=int((base & ~cand).sum()), only_candidate_right=int((~base & cand).sum()),
                        baseline_loss=float(baseline_loss), candidate_loss=float(candidate_loss))


@torch.no_grad()
def paired_counts(baseline: nn.Module, candidate: nn.Module, loader, device) -> PairedCounts:
    """Run both models on every batch of ``loader`` and count where they agree (one pass, so the
    pairing holds even for a shuffled loader)."""
    baseline.eval(), candidate.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    base_right, cand_right, base_loss, cand_loss = [], [], 0.0, 0.0
    for images, targets in loader:
        images, targets = to_device(images, device), targets.to(device)
        base_logits, cand_logits = baseline(images).float(), candidate(images).float()
        base_right.append((base_logits.argmax(1) == targets).cpu())
        cand_right.append((cand_logits.argmax(1) == targets).cpu())
        base_loss += float(criterion(base_logits, targets))
        cand_loss += float(criterion(cand_logits, targets))
    if not base_right:
        raise ValueError("paired_counts() got an empty loader: the validation split holds no images.")
    base_right, cand_right = torch.cat(base_right), torch.cat(cand_right)
    return counts_from_correct(base_right, cand_right, base_loss / len(base_right), cand_loss / len(cand_right))


def paired_difference(counts: PairedCounts) -> tuple[float, float]:
    """(candidate accuracy - baseline accuracy, its standard error) from the per-image differences."""
    n, worse, better = counts.images, counts.only_baseline_right, counts.only_candidate_right
    mean = (better - worse) / n
    if n < 2:
        return mean, float("inf")
    variance = max((worse + better) - n * mean * mean, 0.0) / (n - 1)  # sample variance of d in {-1, 0, 1}
    return mean, math.sqrt(variance / n)


def mcnemar_p(only_baseline_right: int, only_candidate_right: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of the disagreements against an even split."""
    total, smaller = only_baseline_right + only_candidate_right, min(only_baseline_right, only_candidate_right)
    if total == 0:
        return 1.0
    tail = sum(math.comb(total, k) for k in range(smaller + 1)) / 2.0 ** total
    return min(1.0, 2.0 * tail)


def decide(counts: PairedCounts, tolerance: float, z: float | None = None,
           loss_tolerance: float | None = None) -> dict:
    """Whether a pruning round is kept, with the evidence: see the module docstring for the rule.

    ``loss_tolerance`` (when set) also requires the candidate's mean validation loss to be at most
    ``(1 + loss_tolerance)`` x the baseline's (the ``paper`` profile's gate: loss moves before accuracy).
    """
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be a fraction in [0, 1), got {tolerance!r}.")
    if z is not None and not (math.isfinite(z) and z >= 0):
        raise ValueError(f"z must be a finite number >= 0 (standard errors), or None, got {z!r}.")
    difference, standard_error = paired_difference(counts)
    margin = 0.0 if z is None or standard_error == 0 else z * standard_error
    accepted = difference >= -tolerance - margin
    if loss_tolerance is not None:
        accepted = accepted and counts.candidate_loss <= counts.baseline_loss * (1 + loss_tolerance)
    return {"accepted": bool(accepted), "difference": difference, "standard_error": standard_error,
            "threshold": -tolerance - margin, "tolerance": tolerance, "z": z, "loss_tolerance": loss_tolerance,
            "mcnemar_p": mcnemar_p(counts.only_baseline_right, counts.only_candidate_right), "counts": asdict(counts)}

