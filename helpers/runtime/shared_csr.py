"""The shared-weight CSR layout of a pruned, quantized weight: survivors by row, each with a codebook index.

Built straight from the ``.dcz``'s survivor positions (``SharedCSR.from_layer``), without a dense
weight, and read by the kernels of ``helpers.runtime.sparse_kernels`` (Linear layers, grouped or not)
and ``helpers.runtime.conv_kernels`` (convolutions, one index per survivor). Why this layout and what it
costs: the module docstring of ``helpers.runtime.sparse`` and ``SharedCSR``'s own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..coding import fileformat


# Survivors per shared codebook index in the grouped layout (see SharedCSR), and the most padding
# (extra slots per survivor) a layer may take for it; the measurements are in SharedCSR's docstring.
GROUP, MAX_PADDING = 4, 0.25


@dataclass
class SharedCSR:
    """A pruned, quantized 2-D weight (rows, cols) as row-compressed survivors through a codebook.

    Each row is a run of chunks of ``group`` column slots that share one codebook index:
    ``rowptr`` counts chunks, ``idx`` has one entry per chunk, ``cols`` ``group`` entries per chunk.
    With ``group`` 1 that is plain CSR with a codebook index per survivor (3 bytes a survivor).
    With ``group`` 4 (``GROUP``) a row's survivors are sorted by codebook index and each index's run
    is padded to a multiple of 4 with column ``shape[1]`` (the kernel reads a zero there), so the
    kernel sums four inputs and multiplies once per chunk: one codebook load per four survivors, and
    ~2.4 bytes a survivor. The batch-1 kernel is bound by its float loads (x and codebook; the loads
    of the x values alone take half the time), so this is the paper's EIE idea of summing per
    centroid without its cost: the chunks keep one loop per row with no branch on the data.
    Measured (throwaway script, 4096-row fc layers, 32 centroids, random survivors, best of 60,
    idle 2-core Zen 5, 2 threads): 9216 inputs at 9 % 0.61 -> 0.38 ms (5.8 % padding), 4096 inputs
    at 9 % 0.26 -> 0.18 ms (13 %), at 4 % 0.12 -> 0.094 ms (29 %). Runs of 2 and 8 measured
    slower than 4 on all but the densest. A layer is grouped when its padding stays within
    ``MAX_PADDING`` (at batch 32 the padding is extra work the codebook saving does not repay).
    """

    shape: tuple
    rowptr: np.ndarray    # int32 (rows + 1,): chunk offsets
    cols: np.ndarray      # uint16 when cols < 65536, else int32; group * chunks, padding = shape[1]
    idx: np.ndarray       # uint8 when the codebook has <= 256 entries, else uint16; one per chunk
    codebook: np.ndarray  # float32 (k,)
    group: int = 1        # column slots per chunk

    @classmethod
    def from_layer(cls, layer: fileformat.SparseLayer, group: int | None = None) -> "SharedCSR":
        """From the file's flat C-order survivor positions; a conv weight (out, C, kh, kw) becomes
        (out, C*kh*kw), the column order of ``F.unfold``. ``group``: 1, ``GROUP``, or None to group
        when the padding stays within ``MAX_PADDING``."""
        if group not in (None, 1, GROUP):
            raise ValueError(f"group={group!r}: use 1, {GROUP} or None")
        rows = int(layer.shape[0]) if layer.shape else 1
        width, k = math.prod(layer.shape[1:]), layer.codebook.size
        positions, indices = np.asarray(layer.positions), np.asarray(layer.indices)
        _check_survivors(positions, indices, rows * width, k)
        row_of = positions // max(width, 1)
        cols = (positions - row_of * width).astype(np.uint16 if width < 1 << 16 else np.int32)
        codebook = np.ascontiguousarray(layer.codebook, np.float32)
        if group == GROUP and k > 256:
            raise ValueError(f"group={GROUP} needs a codebook of at most 256 entries")
        if group != 1 and k <= 256:
            run_of = row_of.astype(np.int64) * k + indices  # each survivor's (row, index) run
            order = np.argsort(run_of, kind="stable")  # by row, index, column
            runs, counts = _occupied_runs(run_of[order])  # never rows * k counters (3.9 GB for 1M rows)
            padded = -(-counts // GROUP) * GROUP
            if group == GROUP or padded.sum() <= (1 + MAX_PADDING) * max(indices.size, 1):
                return cls((rows, width), *_grouped(order, runs, counts, padded, cols, rows, width, k), codebook,
                           GROUP)
        return cls((rows, width), _offsets(np.bincount(row_of, minlength=rows)), cols,
                   indices.astype(np.uint8 if k <= 256 else np.uint16), codebook, 1)

    @property
    def nbytes(self) -> int:
        return self.rowptr.nbytes + self.cols.nbytes + self.idx.nbytes + self.codebook.nbytes

    @property
    def nnz(self) -> int:
        """Survivors: the column slots that are not padding."""
        return self.idx.size if self.group == 1 else int(np.count_nonzero(self.cols < self.shape[1]))

    @property
    def density(self) -> float:
        return self.nnz / max(math.prod(self.shape), 1)

    def to_scipy(self):
        """The same matrix as scipy fp32 CSR: the fallback kernel and the tests' oracle."""
        from scipy import sparse

        rows, width = self.shape
        slot_rows = np.repeat(np.arange(rows), np.diff(self.rowptr) * self.group)
        real = self.cols < width
        indptr = _offsets(np.bincount(slot_rows[real], minlength=rows))
        values = self.codebook[np.repeat(self.idx, self.group)][real]
        return sparse.csr_matrix((values, self.cols[real].astype(np.int32), indptr), shape=self.shape)


def _check_survivors(positions, indices, numel: int, k: int) -> None:
    """ValueError unless the survivors are strictly increasing flat positions inside the weight, each
    with an index inside the codebook: the kernels index the input and the codebook with them
    unchecked, so a bad one would read past the end."""
    if positions.ndim != 1 or positions.shape != indices.shape:
        raise ValueError("positions and indices must be 1-D arrays of the same length")
    if not positions.size:
        return
    if int(indices.min()) < 0 or int(indices.max()) >= k:
        raise ValueError(f"a survivor's codebook index ({int(indices.min())}..{int(indices.max())}) is outside "
                         f"the codebook's {k} entries")
    if int(positions[0]) < 0 or int(positions[-1]) >= numel or not (np.diff(positions) > 0).all():
        raise ValueError(f"survivor positions must be strictly increasing in [0, {numel})")


def _occupied_runs(sorted_runs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct runs, survivors in each) of the survivors' sorted run numbers."""
    if not sorted_runs.size:
        return sorted_runs, np.zeros(0, dtype=np.int64)
    first = np.flatnonzero(np.concatenate(([True], sorted_runs[1:] != sorted_runs[:-1])))
    return sorted_runs[first], np.diff(np.append(first, sorted_runs.size))


def _grouped(order, runs, counts, padded, cols, rows, width, k):
    """(rowptr, cols, idx) of the grouped layout: the occupied runs (row * k + index) in order, each
    its survivors' columns padded with column ``width`` to ``padded`` slots. ``order`` sorts the
    survivors by run; ``counts``: the survivors of each run."""
    run_sorted = np.repeat(np.arange(runs.size), counts)  # the run of each survivor, in sorted order
    slots = (_exclusive_cumsum(padded)[run_sorted] + np.arange(order.size)
             - _exclusive_cumsum(counts)[run_sorted])
    out_cols = np.full(int(padded.sum()), width, dtype=cols.dtype)
    out_cols[slots] = cols[order]
    chunks_per_run = padded // GROUP
    chunk_idx = np.repeat(runs % k, chunks_per_run).astype(np.uint8)
    chunks_per_row = np.bincount(np.repeat(runs // k, chunks_per_run), minlength=rows)
    return _offsets(chunks_per_row), out_cols, chunk_idx


def _exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(counts.size, dtype=np.int64)
    np.cumsum(counts[:-1], out=out[1:])
    return out


def _offsets(counts: np.ndarray) -> np.ndarray:
    """int32 row pointers (rows + 1,) from per-row counts."""
    out = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    if out[-1] >= 1 << 31:
        raise ValueError(f"{out[-1]} entries in one layer: more than the kernel's int32 row pointers")
    return out.astype(np.int32)
