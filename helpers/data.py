"""Datasets by name, each split into train/val/test with class names (introduced in notebook 01).

``load_splits(name, ...)`` is the one entry point. Image folders (``sea-animals``, ``folder``) are
scanned once: unreadable files are listed and skipped, exact duplicates (by content hash) are dropped
before a stratified, seeded split, and the split is written to the run folder so that every notebook
of a run trains and evaluates on the same images.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .io import atomic_write_text
from .models import IMAGENET_MEAN, IMAGENET_STD, normalization

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".mpo"}
KAGGLE_HANDLE = "vencerlanz09/sea-animals-image-dataste/versions/5"
SEA_ANIMALS_ENV = "SEA_ANIMALS_DIR"
DATASETS = ("sea-animals", "folder", "mnist", "fashion-mnist", "digits")
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


# ----------------------------------------------------------------------------- image folders

def resolve_sea_animals_dir(data_dir=None, download=True) -> Path:
    """First found wins: explicit argument, $SEA_ANIMALS_DIR, ``data/sea-animals``, kagglehub download."""
    candidates = [("argument", data_dir), (f"${SEA_ANIMALS_ENV}", os.environ.get(SEA_ANIMALS_ENV)),
                  ("default", Path("data") / "sea-animals")]
    for source, path in candidates:
        if path and Path(path).is_dir() and any(p.is_dir() for p in Path(path).iterdir()):
            return Path(path)
        if source != "default" and path:
            raise DatasetNotFoundError(f"Sea Animals folder {path!s} (from {source}) does not exist or "
                                       "holds no class folders. Point it at the folder holding "
                                       "<Class>/<image> subfolders.")
    if download:
        try:
            import kagglehub

            return unwrap_single_folder(Path(kagglehub.dataset_download(KAGGLE_HANDLE)))
        except Exception as exc:  # no network, no kagglehub, Kaggle refusing: all mean "not here"
            reason = f"{type(exc).__name__}: {exc}"
    else:
        reason = "download disabled"
    raise DatasetNotFoundError(
        "The Sea Animals dataset was not found and could not be downloaded "
        f"({reason}).\nEither download it with `python -c \"import kagglehub; "
        f"print(kagglehub.dataset_download('{KAGGLE_HANDLE}'))\"` (public, no token needed) "
        f"or from https://www.kaggle.com/datasets/vencerlanz09/sea-animals-image-dataste, then put the "
        f"class folders under data/sea-animals/, set ${SEA_ANIMALS_ENV}, or pass --data-dir."
    )


def check_image(path: Path) -> str | None:
    """Return why ``path`` is not a usable image, or None when it decodes completely."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path) as img:
            img.load()  # a full decode: verify() alone misses truncated JPEGs
        return None
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError) for bad files
        return f"{type(exc).__name__}: {exc}"


def unwrap_single_folder(root: Path) -> Path:
    """``root``, or its only subfolder when ``root`` is just a wrapper around the class folders.

    Archives (Kaggle's included) often unpack to ``<root>/<Name>/<Class>/<image>``; used for the
    download only: a folder the user passed is checked by ``scan_folder`` and refused with the fix.
    """
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and _holds_class_folders(entries[0]):
        return entries[0]
    return root


def _holds_class_folders(folder: Path) -> bool:
    subfolders = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return len(subfolders) >= 2 and any(f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                                        for sub in subfolders for f in sub.iterdir())


def _unusable_link(path: Path) -> str | None:
    """Why a symlink is not scanned (a loop, a dangling link, a linked folder), or None for a linked file."""
    if not path.is_symlink():
        return None
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return "symlink loop or dangling symlink"
    return "symlinked folder, not followed" if target.is_dir() else None


def scan_folder(root) -> dict:
    """List every image under ``root/<Class>/``; report unreadable files and exact duplicates.

    Returns ``{"classes", "items": [[relpath, label]], "skipped": [[relpath, reason]],
    "duplicates": [[dropped relpath, kept relpath]]}``. Duplicates keep the first path in sorted order.
    Symlink loops, dangling links and linked folders are listed in ``skipped`` (never followed). A
    folder holding one folder of class folders is refused with the path to pass instead.
    """
    root = Path(root)
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    # a linked class folder is used (e.g. classes gathered from several disks); a broken one is listed
    broken = [p for p in entries if _unusable_link(p) == "symlink loop or dangling symlink"]
    skipped = [[p.name, "symlink loop or dangling symlink"] for p in broken]
    classes = [p.name for p in entries if p.is_dir() and p not in broken]
    if not classes:
        raise DatasetNotFoundError(f"{root} holds no class folders; expected {root}/<Class>/<image>.")
    if len(classes) == 1 and _holds_class_folders(root / classes[0]):
        raise DatasetError(f"{root} holds a single folder, {classes[0]}, which itself holds class folders: "
                           f"pass {root / classes[0]} as the data folder instead (--data-dir).")
    items, duplicates, seen = [], [], {}
    for label, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            rel = path.relative_to(root).as_posix()
            link_problem = _unusable_link(path)
            if link_problem:
                skipped.append([rel, link_problem])
                continue
            if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            problem = check_image(path)
            if problem:
                skipped.append([rel, problem])
                continue
            digest = hashlib.sha1(path.read_bytes()).hexdigest()
            if digest in seen:
                duplicates.append([rel, seen[digest]])
                continue
            seen[digest] = rel
            items.append([rel, label])
    return {"classes": classes, "items": items, "skipped": skipped, "duplicates": duplicates}


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


def folder_split(root, split_file=None, seed=0, fractions=SPLIT_FRACTIONS) -> dict:
    """Scan + deduplicate + split, reusing ``split_file`` when it exists (one split per run)."""
    root = Path(root)
    if split_file and Path(split_file).exists():
        split = json.loads(Path(split_file).read_text())
        if Path(split["root"]).resolve() != root.resolve() or split["seed"] != seed:
            raise ValueError(f"{split_file} was made for {split['root']} with seed {split['seed']}, not "
                             f"{root} with seed {seed}; use a new run folder or delete the split file.")
        return split
    scan = scan_folder(root)
    labels = [label for _, label in scan["items"]]
    check_class_counts(scan["classes"], labels, fractions, root)
    train, val, test = stratified_split(labels, fractions, seed)
    split = {"root": str(root), "seed": seed, "classes": scan["classes"],
             "skipped": scan["skipped"], "duplicates": scan["duplicates"],
             "train": [scan["items"][i] for i in train], "val": [scan["items"][i] for i in val],
             "test": [scan["items"][i] for i in test]}
    if split_file:
        atomic_write_text(split_file, json.dumps(split, indent=1))
    return split


def open_image(path, mode: str = "RGB") -> Image.Image:
    """The decoded image in ``mode`` (RGB, or L for one channel); raises what PIL raises if unreadable."""
    with Image.open(path) as img:
        # RGBA/palette/grayscale/MPO all go through convert; "P" with transparency needs RGBA first
        img = img.convert("RGBA") if img.mode == "P" else img
        return img.convert(mode)


class ImageListDataset(Dataset):
    """(relative path, label) pairs under a root; every image becomes RGB (or L for 1 channel)."""

    def __init__(self, root, items, transform=None, mode="RGB", cache_side: int | None = None):
        self.root, self.items, self.transform, self.mode = Path(root), list(items), transform, mode
        self.targets = [label for _, label in self.items]
        # Small profiles keep each decoded image in memory, already resized to ``cache_side`` exactly
        # as the transforms' first step (Resize) would: decoding the JPEGs again every epoch costs
        # more than training a LeNet on them, and the transform's own Resize is then a no-op copy,
        # so cached and uncached loading give identical tensors.
        self._cache = {}
        self._resize = None
        if cache_side:
            from torchvision import transforms as T

            self._resize = T.Resize(cache_side)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        rel, label = self.items[i]
        img = self._cache.get(i)
        if img is None:
            img = open_image(self.root / rel, self.mode)
            if self._resize is not None:
                img = self._resize(img)
                self._cache[i] = img
        return (self.transform(img) if self.transform else img), label


class ArrayImageDataset(Dataset):
    """uint8 images (N, H, W) or (N, H, W, C) in memory with integer labels (MNIST, digits).

    With a ``PreparedTransform`` the deterministic steps run once for all images on first use and
    each item only gets its random shift/flip; assign another ``transform`` (or None for PIL images,
    as notebook 01 does) and items go through it as usual.
    """

    def __init__(self, images: np.ndarray, labels, transform=None):
        self.images, self.targets, self.transform = images, [int(x) for x in labels], transform
        self._prepared = None

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        tf = self.transform
        if isinstance(tf, PreparedTransform) and tf.fits(self.images):
            if self._prepared is None or self._prepared[0] is not tf:
                self._prepared = (tf, tf.prepare(self.images))
            return tf.augment(self._prepared[1][i]), self.targets[i]
        img = Image.fromarray(self.images[i])
        return (tf(img) if tf else img), self.targets[i]


class PreparedTransform:
    """``make_transforms``' pipeline split for images held in memory: resize + normalize once, shift per item.

    Decoding, resizing and normalizing each digit again every epoch took 2.4 s of a 3.5 s LeNet-300-100
    epoch on all 1,259 training digits (2 shared cores). The random crop and flip are the same
    torchvision transforms applied to the normalized tensor instead of the PIL image: they draw the
    same random numbers and give the same values (normalizing is per pixel; reflect padding is the
    same on both), as ``tests/test_data.py`` checks. Above ``MAX_BYTES`` of prepared tensors
    (e.g. MNIST upscaled to 224 px) items go through the PIL pipeline.
    """

    MAX_BYTES = 512 << 20

    def __init__(self, image_size: int, mean, std, train: bool, augment=True):
        from torchvision import transforms as T

        self.image_size = image_size
        self.pipeline = make_transforms(image_size, mean, std, train, augment)
        self.deterministic = make_transforms(image_size, mean, std, False)
        random = train and augment
        self.shift = T.RandomCrop(image_size, padding=max(1, image_size // 16), padding_mode="reflect") \
            if random else None
        self.flip = T.RandomHorizontalFlip() if random and len(mean) == 3 else None

    def __call__(self, img):  # a PIL image, like any torchvision transform
        return self.pipeline(img)

    def fits(self, images) -> bool:
        channels = images.shape[3] if images.ndim == 4 else 1
        square = images.ndim >= 3 and images.shape[1] == images.shape[2]  # Resize then keeps the whole image
        return square and len(images) * channels * self.image_size ** 2 * 4 <= self.MAX_BYTES

    def prepare(self, images) -> torch.Tensor:
        return torch.stack([self.deterministic(Image.fromarray(a)) for a in images])

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shift(x) if self.shift is not None else x
        return self.flip(x) if self.flip is not None else x


# ----------------------------------------------------------------------------- MNIST-style idx files

IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
MNIST_CLASSES = {"mnist": [str(i) for i in range(10)],
                 "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                   "Shirt", "Sneaker", "Bag", "Ankle boot"]}


def read_idx(path) -> np.ndarray:
    """Read an idx file (optionally gzipped) as used by MNIST and Fashion-MNIST."""
    path = Path(path)
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise ValueError(f"{path} is not an idx file of unsigned bytes.")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(int)
    if 4 + 4 * ndim + int(np.prod(dims)) != len(raw):
        raise ValueError(f"{path}: header says shape {tuple(dims)} but the file holds {len(raw)} bytes.")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find_idx_folder(data_dir) -> Path | None:
    """The folder under ``data_dir`` holding the raw idx files, plain or .gz, if any."""
    if not data_dir:
        return None
    for folder in [Path(data_dir), *Path(data_dir).glob("*/raw"), *Path(data_dir).glob("raw")]:
        if all(any((folder / (n + ext)).exists() for ext in ("", ".gz")) for n in IDX_NAMES["train"]):
            return folder
    return None


def load_idx_pair(folder: Path, part: str):
    def pick(name):
        return folder / name if (folder / name).exists() else folder / (name + ".gz")

    images_name, labels_name = IDX_NAMES[part]
    return read_idx(pick(images_name)), read_idx(pick(labels_name))


def mnist_arrays(name, data_dir=None, download=True):
    """(train_images, train_labels, test_images, test_labels) from raw idx files or torchvision."""
    folder = find_idx_folder(data_dir)
    if folder is None:
        from torchvision import datasets

        cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
        root = data_dir or Path("data")
        try:
            train, test = cls(root, train=True, download=download), cls(root, train=False, download=download)
        except Exception as exc:  # RuntimeError when missing, URLError when offline
            raise DatasetNotFoundError(
                f"{name} is not in {root} and could not be downloaded ({exc}). Put the four raw idx files "
                f"(train-images-idx3-ubyte[.gz], ...) in a folder and pass it as --data-dir"
                + (" (Debian: apt-get install dataset-fashion-mnist puts them in "
                   "/usr/share/datasets/fashion-mnist)." if name == "fashion-mnist" else ".")) from exc
        return train.data.numpy(), train.targets.numpy(), test.data.numpy(), test.targets.numpy()
    return (*load_idx_pair(folder, "train"), *load_idx_pair(folder, "test"))


# ----------------------------------------------------------------------------- scikit-learn's digits

def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 bundled 8x8 digits as uint8 images (0..16 levels scaled to bytes) and labels.

    Read straight from the CSV scikit-learn ships: importing ``sklearn.datasets`` cost ~7 s in every
    notebook of the offline demo on a busy 2-core machine, reading the file ~0.3 s. Falls back to
    ``load_digits`` if a scikit-learn version keeps the file elsewhere.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if csv is not None and csv.is_file():
        table = np.loadtxt(csv, delimiter=",", dtype=np.float64)
        pixels, labels = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels, labels = bunch.images, bunch.target
    return (pixels * (255 / 16)).round().astype(np.uint8), labels


# ----------------------------------------------------------------------------- transforms and entry point

def make_transforms(image_size: int, mean, std, train: bool, augment=True):
    from torchvision import transforms as T

    resize = [T.Resize(image_size), T.CenterCrop(image_size)]
    if train and augment:
        # light augmentation: photos get flips and a small shift; digits only the shift
        resize = [T.Resize(image_size), T.RandomCrop(image_size, padding=max(1, image_size // 16),
                                                    padding_mode="reflect")]
        if len(mean) == 3:
            resize.append(T.RandomHorizontalFlip())
    return T.Compose([*resize, T.ToTensor(), T.Normalize(mean, std)])


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
        if not root.is_dir():
            raise DatasetNotFoundError(f"{root} is not a folder of <Class>/<image> subfolders.")
        split = folder_split(root, split_file, seed)
        mean, std = mean or IMAGENET_MEAN, std or IMAGENET_STD
        parts = {k: _subset(split[k], per_class.get(k), seed) for k in ("train", "val", "test")}
        cache_side = image_size if cache_images else None
        make = lambda k: ImageListDataset(root, parts[k], make_transforms(image_size, mean, std, k == "train"
                                                                         and augment), cache_side=cache_side)
        info = {"root": str(root), "skipped": split["skipped"], "duplicates": split["duplicates"]}
        splits = Splits(make("train"), make("val"), make("test"), split["classes"], 3, image_size,
                        tuple(mean), tuple(std), info)
    else:
        if name == "digits":
            images, labels = digits_arrays()
            train_idx, val_idx, test_idx = stratified_split(labels, SPLIT_FRACTIONS, seed)
            arrays = {"train": (images[train_idx], labels[train_idx]), "val": (images[val_idx],
                      labels[val_idx]), "test": (images[test_idx], labels[test_idx])}
            classes = [str(i) for i in range(10)]
            mean, std = mean or (0.3, ), std or (0.4, )
        else:
            x_train, y_train, x_test, y_test = mnist_arrays(name, data_dir, download)
            # validation: a stratified 1/12 of the official training set; the official test set stays untouched
            train_idx, val_idx, _ = stratified_split(y_train, (11 / 12, 1 / 12, 0.0), seed)
            arrays = {"train": (x_train[train_idx], y_train[train_idx]),
                      "val": (x_train[val_idx], y_train[val_idx]), "test": (x_test, y_test)}
            classes = MNIST_CLASSES[name]
            mean, std = mean or ((0.1307, ) if name == "mnist" else (0.2860, )), std or \
                ((0.3081, ) if name == "mnist" else (0.3530, ))
        datasets = {}
        for k, (x, y) in arrays.items():
            keep = take_per_class(range(len(y)), y, per_class.get(k), seed)
            tf = PreparedTransform(image_size, mean, std, k == "train", augment)
            datasets[k] = ArrayImageDataset(x[keep], y[keep], tf)
        splits = Splits(datasets["train"], datasets["val"], datasets["test"], classes, 1, image_size,
                        tuple(mean), tuple(std), {"skipped": [], "duplicates": []})
    splits.info["sizes"] = {k: len(getattr(splits, k)) for k in ("train", "val", "test")}
    return splits


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
