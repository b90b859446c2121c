"""Datasets held as arrays: MNIST-style idx files (MNIST, Fashion-MNIST) and scikit-learn's digits."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .splits import DatasetNotFoundError


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
