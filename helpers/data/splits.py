"""Splitting a labelled set: seeded, stratified parts and per-class slices, and the checks that a
folder can make a sound split (every class in train, validation and test)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch.utils.data import Dataset

SPLIT_FRACTIONS = (0.70, 0.15, 0.15)


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is neither on disk nor downloadable; the message says where to put it."""


class DatasetError(ValueError):
    """The images are there but cannot make a sound split (one class, too few images); the message says why."""


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset
    class_names: list[str]
    in_channels: int
    image_size: int
    mean: tuple
    std: tuple
    info: dict = field(default_factory=dict)  # scan report: duplicates, skipped files, split sizes


def stratified_split(labels, fractions=SPLIT_FRACTIONS, seed=0) -> tuple[list, list, list]:
    """Indices of a seeded split that keeps each class's proportions in every part."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}.")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts = ([], [], [])
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_val = int(round(fractions[1] * len(idx)))
        n_test = int(round(fractions[2] * len(idx)))
        parts[1].extend(idx[:n_val])
        parts[2].extend(idx[n_val:n_val + n_test])
        parts[0].extend(idx[n_val + n_test:])
    return tuple(sorted(int(i) for i in p) for p in parts)


def smallest_class_size(fractions=SPLIT_FRACTIONS) -> int:
    """The fewest images a class needs for at least one in each part of a ``stratified_split``."""
    n = 1
    while not (round(fractions[1] * n) >= 1 and round(fractions[2] * n) >= 1
               and n - round(fractions[1] * n) - round(fractions[2] * n) >= 1):
        n += 1
    return n


def check_class_counts(classes, labels, fractions=SPLIT_FRACTIONS, root="the data folder") -> None:
    """``DatasetError`` naming the classes too small to appear in train, val and test, or fewer than 2 classes."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=len(classes))
    if len(classes) < 2:
        raise DatasetError(f"{root} holds only one class folder ({classes[0]}); a classifier needs at least "
                           "two: put each class's images in its own folder, <Class>/<image>.")
    need = smallest_class_size(fractions)
    small = [f"{name} ({count})" for name, count in zip(classes, counts) if count < need]
    if small:
        raise DatasetError(f"{len(small)} class folder(s) of {root} hold fewer than the {need} usable images a "
                           f"class needs to appear in train, val and test: {', '.join(small)}. Add images to "
                           "them or move those folders out.")


def take_per_class(indices, labels, per_class: int | None, seed=0) -> list:
    """A stratified slice: at most ``per_class`` of ``indices`` from each class (the ``ci`` profile)."""
    if not per_class:
        return list(indices)
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    indices = np.asarray(indices)
    keep = []
    for label in np.unique(labels[indices]):
        members = indices[labels[indices] == label]
        keep.extend(rng.permutation(members)[:per_class])
    return sorted(int(i) for i in keep)
