"""The ``.dcz`` format's constants and its sparse layout: the gap stream and ``SparseLayer`` (a
quantized layer as the file holds it, survivors only). The format itself is described in
``helpers.coding.fileformat``; ``fileformat_write`` writes it, ``fileformat_read`` reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from . import streams as coding

MAGIC = b"\x89DCZ\r\n\x1a\n"
TRAILER = b"DCZE"
VERSION = 6
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6)
CODERS = (*coding.CODERS, "cabac")  # per stream: Huffman, rANS; per layer: helpers.coding.cabac
EXTENSION = ".dcz"
MAX_HEADER_BYTES = 64 << 20  # the header, compressed and inflated
MAX_ELEMENTS = 1 << 28  # dense weights the plain reader may rebuild; VGG16 has 1.4e8 parameters
DEFAULT_GAP_BITS = {"conv": 8, "fc": 5}
CODEBOOK_DTYPES = ("auto", "float32", "float16")
CREATE_KEYS = {"name", "num_classes", "in_channels", "image_size"}  # never 'pretrained': no downloads
DTYPES = {"float32": (torch.float32, "<f4"), "float64": (torch.float64, "<f8"),
          "float16": (torch.float16, "<f2"), "bfloat16": (torch.bfloat16, "<i2"),
          "int64": (torch.int64, "<i8"), "int32": (torch.int32, "<i4"), "int16": (torch.int16, "<i2"),
          "int8": (torch.int8, "i1"), "uint8": (torch.uint8, "u1"), "bool": (torch.bool, "u1")}


# The largest magnitude a stored float may have (codebooks, biases, BatchNorm statistics). Trained
# weights and statistics lie far below it (the running variance of raw 0-255 pixels is ~1e4); a
# value near float32's limit (3.4e38) overflows in the first product or sum (a 3e38 codebook entry
# made every output NaN), while products of two values up to 1.1e12 stay below 1.3e24. So a larger
# value, like NaN or inf, can only be damage or a diverged model.
MAX_MAGNITUDE = 2.0 ** 40
VALUES_PROBLEM = f"holds NaN, infinite or huge values (|x| > {MAX_MAGNITUDE:.3g}): a diverged model or damage"


def values_ok(values: np.ndarray) -> bool:
    """Every value finite and within ``MAX_MAGNITUDE`` (the reader and writer refuse the rest)."""
    values = np.asarray(values)
    return not values.size or bool(np.isfinite(values).all() and np.abs(values).max() <= MAX_MAGNITUDE)


class CompressedFileError(ValueError):
    """A compressed model file is corrupt, truncated, foreign or inconsistent with its model."""


class Contents(NamedTuple):
    create_args: dict
    layers: dict        # name -> QuantizedLayer
    other_tensors: dict  # state_dict name -> Tensor
    metadata: dict



def gap_encode(positions: np.ndarray, gap_bits: int) -> np.ndarray:
    """Gap stream (uint16 symbols) of strictly increasing flat positions; fillers are 2**g - 1."""
    filler = (1 << gap_bits) - 1
    if positions.size == 0:
        return np.zeros(0, dtype=np.uint16)
    delta = np.diff(positions, prepend=-1) - 1
    fills = delta // filler
    slot = np.cumsum(fills + 1) - 1  # where each survivor's own symbol lands
    out = np.full(int(slot[-1]) + 1, filler, dtype=np.uint16)
    out[slot] = delta - fills * filler
    return out


def gap_decode(symbols: np.ndarray, gap_bits: int, numel: int, survivors: int) -> np.ndarray:
    """Flat positions from a gap stream; ValueError unless it is exactly what encode writes."""
    filler = (1 << gap_bits) - 1
    # int32 halves the memory traffic; only where no stream, however corrupt, could overflow it
    dtype = np.int32 if symbols.size * filler < 1 << 31 else np.int64
    advance = np.arange(1, filler + 2, dtype=dtype)
    advance[filler] = filler  # symbol s < M advances s + 1, the filler M advances M
    kept = symbols != filler
    if int(np.count_nonzero(kept)) != survivors or (symbols.size and not kept[-1]):
        raise ValueError("gap stream does not match the survivor count")
    positions = np.cumsum(advance[symbols], dtype=dtype)[kept]
    positions -= 1
    if positions.size and positions[-1] >= numel:
        raise ValueError("gap stream runs past the end of the weight")
    return positions


@dataclass
class SparseLayer:
    """A quantized layer as the file holds it: survivors only."""

    shape: tuple
    bits: int
    codebook: np.ndarray   # float32 (k,)
    positions: np.ndarray  # int32 or int64, flat C-order positions of survivors
    indices: np.ndarray    # codebook index of each survivor (any integer dtype)

    @classmethod
    def from_quantized(cls, q) -> "SparseLayer":
        mask = q.mask.detach().cpu().numpy().reshape(-1)
        positions = np.flatnonzero(mask)
        indices = q.indices.detach().cpu().reshape(-1).numpy()[positions]
        codebook = q.codebook.detach().cpu().numpy()
        if codebook.dtype != np.float32 or codebook.ndim != 1:
            raise ValueError("codebook must be a 1-D float32 tensor")
        if tuple(q.indices.shape) != tuple(q.mask.shape):
            raise ValueError("indices and mask shapes differ")
        if not 1 <= int(q.bits) <= 16 or codebook.size > 1 << int(q.bits):
            raise ValueError(f"bits={q.bits} must be in [1, 16] with at most 2**bits codebook entries")
        if indices.size and (indices.min() < 0 or indices.max() >= codebook.size):
            raise ValueError("a surviving weight's index is outside the codebook")
        return cls(tuple(q.mask.shape), int(q.bits), codebook, positions, indices.astype(np.int64))

    def used_part(self) -> "SparseLayer":
        """The same weights with only the codebook entries a survivor uses, indices renumbered.

        Kept entries keep their order and float32 bits. No survivors: the first entry alone (if
        any), so index 0, which the reader gives pruned positions, still has a value.
        """
        used = np.bincount(self.indices, minlength=self.codebook.size).astype(bool)
        if not self.indices.size:
            used[:1] = True
        if used.all():
            return self
        renumber = np.cumsum(used) - 1
        return SparseLayer(self.shape, self.bits, self.codebook[used], self.positions,
                           renumber[self.indices])

    def dense(self) -> torch.Tensor:
        """The weight: codebook values at survivors, +0.0 elsewhere.

        numpy's zeros are calloc'd (and huge-page backed) so only pages that hold survivors are
        ever touched: about 3x faster than torch.zeros + scatter for VGG16's 400 MB fc6.
        """
        w = np.zeros(math.prod(self.shape), dtype=np.float32)
        w[self.positions] = self.codebook[self.indices]
        return torch.from_numpy(w).view(self.shape)

    def to_quantized(self):
        from ..quantize.quantization import QuantizedLayer

        n = math.prod(self.shape)
        idx, mask = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)  # calloc'd: see dense()
        idx[self.positions], mask[self.positions] = self.indices, True
        return QuantizedLayer(torch.from_numpy(self.codebook.copy()),
                              torch.from_numpy(idx).view(self.shape), torch.from_numpy(mask).view(self.shape),
                              self.bits)



def default_gap_bits(shape) -> int:
    return DEFAULT_GAP_BITS["conv" if len(shape) == 4 else "fc"]
