"""Trained quantization (paper section 3): per-layer k-means weight sharing, centroid fine-tuning.

Introduced in notebook 05.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class QuantizedLayer:
    """One layer's shared weights: ``weight == codebook[indices] * mask`` exactly.

    This is the interface between quantization and the compressed file format.
    """

    codebook: torch.Tensor  # float32, shape (k,), k <= 2**bits; the shared values (centroids)
    indices: torch.Tensor   # int64, the weight's shape; index into codebook (ignored where mask is False)
    mask: torch.Tensor      # bool, the weight's shape; True where the weight survived pruning
    bits: int               # index width the layer was clustered with

    def weight(self) -> torch.Tensor:
        return self.codebook[self.indices] * self.mask
