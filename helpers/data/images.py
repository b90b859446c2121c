"""Datasets of images, on disk or in memory, and their transforms (resize, light augmentation, normalize)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


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
