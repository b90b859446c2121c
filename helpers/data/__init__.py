"""Datasets by name, each split into train/val/test with class names (introduced in notebook 01).

``load_splits(name, ...)`` is the one entry point. Image folders (``sea-animals``, ``folder``) are
scanned once: unreadable files are listed and skipped, exact duplicates (by content hash) are dropped
before a stratified, seeded split, and the split is written to the run folder so that every notebook
of a run trains and evaluates on the same images.

The package's modules: ``folders`` (scan and split image folders), ``arrays`` (idx files, digits),
``images`` (datasets and transforms), ``splits`` (stratified splits and their checks). Their public
names are re-exported here, so ``helpers.data.X`` is the one address of each.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..models import IMAGENET_MEAN, IMAGENET_STD, normalization
from .arrays import IDX_NAMES, MNIST_CLASSES, digits_arrays, find_idx_folder, load_idx_pair, mnist_arrays, read_idx
from .folders import (IMAGE_EXTENSIONS, KAGGLE_HANDLE, SEA_ANIMALS_ENV, check_image, folder_split,
                      resolve_sea_animals_dir, scan_folder, unwrap_single_folder)
from .images import ArrayImageDataset, ImageListDataset, PreparedTransform, make_transforms, open_image
from .splits import (SPLIT_FRACTIONS, DatasetError, DatasetNotFoundError, Splits, check_class_counts,
                     smallest_class_size, stratified_split, take_per_class)

DATASETS = ("sea-animals", "folder", "mnist", "fashion-mnist", "digits")

__all__ = ["DATASETS", "IDX_NAMES", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "KAGGLE_HANDLE",
           "MNIST_CLASSES", "SEA_ANIMALS_ENV", "SPLIT_FRACTIONS", "ArrayImageDataset", "DatasetError",
           "DatasetNotFoundError", "ImageListDataset", "PreparedTransform", "Splits", "check_class_counts",
           "check_image", "digits_arrays", "evaluation_slice", "find_idx_folder", "folder_split", "load_idx_pair",
           "load_splits", "load_splits_for", "loader", "make_transforms", "mnist_arrays", "open_image", "read_idx",
           "resolve_sea_animals_dir", "scan_folder", "smallest_class_size", "stratified_split", "take_per_class",
           "unwrap_single_folder"]


def _subset(dataset_items, n_per_class, seed):
    labels = [label for _, label in dataset_items]
    keep = take_per_class(range(len(labels)), labels, n_per_class, seed)
    return [dataset_items[i] for i in keep]


def load_splits(name: str, data_dir=None, image_size: int = 32, split_file=None, seed: int = 0,
                per_class: dict | None = None, mean=None, std=None, augment=True, download=True,
                cache_images: bool = False) -> Splits:
    """Train/val/test datasets for ``name`` (one of DATASETS), with class names and scan report.

    ``per_class`` caps each split at that many images per class, e.g. ``{"train": 20, "val": 5,
    "test": 5}`` for the ``ci`` profile; None keeps everything. ``cache_images`` keeps decoded photos
    in memory at about the target size (for small image sizes; the ``ci`` and ``cpu`` profiles).
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    per_class = per_class or {}
    if name in ("sea-animals", "folder"):
        if name == "folder" and not data_dir:
            raise ValueError("The 'folder' dataset needs data_dir=<a folder of <Class>/<image> subfolders>.")
        root = resolve_sea_animals_dir(data_dir, download) if name == "sea-animals" else Path(data_dir)
        splits = _folder_splits(root, image_size, split_file, seed, per_class, mean or IMAGENET_MEAN,
                                std or IMAGENET_STD, augment, image_size if cache_images else None)
    else:
        splits = _array_splits(name, data_dir, image_size, seed, per_class, mean, std, augment, download)
    splits.info["sizes"] = {k: len(getattr(splits, k)) for k in ("train", "val", "test")}
    return splits


def _folder_splits(root, image_size, split_file, seed, per_class, mean, std, augment, cache_side) -> Splits:
    """A folder of ``<Class>/<image>`` photos, scanned and split once per run (``split_file``)."""
    if not root.is_dir():
        raise DatasetNotFoundError(f"{root} is not a folder of <Class>/<image> subfolders.")
    split = folder_split(root, split_file, seed)
    parts = {k: _subset(split[k], per_class.get(k), seed) for k in ("train", "val", "test")}
    make = lambda k: ImageListDataset(root, parts[k], make_transforms(image_size, mean, std, k == "train"
                                                                     and augment), cache_side=cache_side)
    info = {"root": str(root), "skipped": split["skipped"], "duplicates": split["duplicates"]}
    return Splits(make("train"), make("val"), make("test"), split["classes"], 3, image_size,
                  tuple(mean), tuple(std), info)


def _array_splits(name, data_dir, image_size, seed, per_class, mean, std, augment, download) -> Splits:
    """Digits (split 70/15/15 like a folder) or (Fashion-)MNIST (validation: a stratified 1/12 of the
    official training set; the official test set stays untouched), held in memory."""
    if name == "digits":
        images, labels = digits_arrays()
        train_idx, val_idx, test_idx = stratified_split(labels, SPLIT_FRACTIONS, seed)
        arrays = {"train": (images[train_idx], labels[train_idx]), "val": (images[val_idx],
                  labels[val_idx]), "test": (images[test_idx], labels[test_idx])}
        classes = [str(i) for i in range(10)]
        mean, std = mean or (0.3, ), std or (0.4, )
    else:
        x_train, y_train, x_test, y_test = mnist_arrays(name, data_dir, download)
        train_idx, val_idx, _ = stratified_split(y_train, (11 / 12, 1 / 12, 0.0), seed)
        arrays = {"train": (x_train[train_idx], y_train[train_idx]),
                  "val": (x_train[val_idx], y_train[val_idx]), "test": (x_test, y_test)}
        classes = MNIST_CLASSES[name]
        mean, std = mean or ((0.1307, ) if name == "mnist" else (0.2860, )), std or \
            ((0.3081, ) if name == "mnist" else (0.3530, ))
    datasets = {}
    for k, (x, y) in arrays.items():
        keep = take_per_class(range(len(y)), y, per_class.get(k), seed)
        datasets[k] = ArrayImageDataset(x[keep], y[keep], PreparedTransform(image_size, mean, std, k == "train",
                                                                             augment))
    return Splits(datasets["train"], datasets["val"], datasets["test"], classes, 1, image_size,
                  tuple(mean), tuple(std), {"skipped": [], "duplicates": []})


def load_splits_for(settings: dict, sliced: bool = True) -> Splits:
    """``load_splits`` with a notebook's resolved settings (``helpers.pipeline.config.resolve_settings``).

    Photos are normalized as the model's pretrained weights expect (``helpers.models.normalization``).
    """
    photos = settings["dataset"] in ("sea-animals", "folder")
    mean, std = normalization(settings["model_name"]) if photos else (None, None)
    return load_splits(settings["dataset"], settings["data_dir"], settings["image_size"],
                       split_file=settings["split_file"], seed=settings["seed"],
                       per_class=settings["per_class"] if sliced else None, mean=mean, std=std,
                       cache_images=settings.get("cache_images", False))


def evaluation_slice(dataset, size: int | None, seed: int = 0):
    """A fixed random subset of ``size`` items (all of ``dataset`` when ``size`` is None or larger).

    The splits are stored class by class, so "the first N batches" would see only the first classes;
    the sensitivity scan (notebook 03) and the bits sweep (notebook 05) use this slice instead.
    """
    if size is None or size >= len(dataset):
        return dataset
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer or None, got {size!r}.")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return torch.utils.data.Subset(dataset, sorted(order[:size].tolist()))


def loader(dataset, batch_size, shuffle=False, num_workers=0, seed=0):
    """A DataLoader whose shuffling order depends only on ``seed`` (and the epoch it is iterated in)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                                       num_workers=num_workers, generator=generator,
                                       persistent_workers=num_workers > 0)
