"""Sparse matrix products straight from the shared-weight form (paper section 3 + EIE's idea).

A pruned, quantized layer is kept as row-compressed survivors: ``rowptr`` (int32, one per output
row + 1), ``cols`` (uint16 column of each survivor when the layer has fewer than 65,536 inputs,
else int32) and ``idx`` (uint8 codebook index for <= 256 centroids, else uint16), plus the float32
codebook. That is 3 bytes per survivor instead of fp32 CSR's 8 (value + int32 column), and the
kernel looks the weight up in the codebook (32 or 256 floats: always in L1) as it multiplies.
In the grouped layout (``group`` 4, ``helpers.runtime.sparse.SharedCSR``) four columns share one index, so
the kernels sum four inputs and multiply once: at batch 1 the kernel is bound by its float loads
(x and the codebook), and this removes three codebook loads in four.

Why numba. A kernel of our own is needed for the uint8/uint16 form (no maintained library
multiplies through a codebook), and numba compiles it at run time from PyPI wheels alone (numba +
llvmlite): no C compiler on the target machine, so no build step that can fail. ``parallel=True``
splits the output rows over the cores (as many threads as torch uses); ``cache=True`` keeps the
compiled code in ``__pycache__``, so later processes skip the few seconds of compiling.

Measured (best of 40 calls, one throwaway script on the 2-core AVX2 development machine under a
load average of ~9, AlexNet's fc6 4096 x 9216 at 9 %, batch 1): this kernel 2.2 ms on two threads
(8-13 ms in runs where the other core was taken), 3.1 ms on one; scipy fp32 CSR (one thread)
4.2-4.4 ms; a single-accumulator loop 3.7 ms on one core.
The whole-network and fc-part rows, with dense and int8 side by side, come from
``python benchmarks/bench_runtime.py``.

Importing this module imports numba (compiling happens on first call); ``helpers.runtime.sparse`` imports
it only when the shared-weight kernel is used, and falls back to scipy's fp32 CSR without numba.
"""

from __future__ import annotations

import os

import numba
import numpy as np
import torch


# Indices are unsigned (np.uint64) on purpose: numba wraps a negative signed index around (Python's
# a[-1]), and LLVM cannot prove a position loaded from rowptr non-negative, so every signed a[j] cost
# a compare, a cmov and two adds; unsigned ones compile to one load each. Measured with
# ``python benchmarks/bench_runtime.py --threads 1 --only alexnet-64`` on the idle Zen 5 machine:
# AlexNet's fc layers at batch 1 took 1.64 ms sparse before (commit a530333), 1.15-1.23 ms after.
# Eight accumulators: one float add chain waits on the add's latency at every survivor (four
# measured 10 % slower on Zen 5: fc6 of AlexNet at 9 %, 0.95 vs 0.86 ms). No fastmath: LLVM then
# turns the loop into gathers, which measured ~2x slower than these scalar loads (AVX2 and AVX-512).
# Looping over each centroid's run of a row sorted by index (one multiply per centroid) was at most
# 15 % faster on fc6, no faster on fc7: a mispredicted loop exit per run. The grouped kernels below
# keep the saving without the branches.
@numba.njit(parallel=True, cache=True, nogil=True)
def _shared_matvec(rowptr, cols, idx, codebook, x, y):
    one, eight = np.uint64(1), np.uint64(8)
    for r in numba.prange(rowptr.size - 1):
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
        j, end = np.uint64(rowptr[r]), np.uint64(rowptr[r + 1])
        while j + eight <= end:
            a0 += codebook[idx[j]] * x[cols[j]]
            a1 += codebook[idx[j + one]] * x[cols[j + one]]
            a2 += codebook[idx[j + np.uint64(2)]] * x[cols[j + np.uint64(2)]]
            a3 += codebook[idx[j + np.uint64(3)]] * x[cols[j + np.uint64(3)]]
            a4 += codebook[idx[j + np.uint64(4)]] * x[cols[j + np.uint64(4)]]
            a5 += codebook[idx[j + np.uint64(5)]] * x[cols[j + np.uint64(5)]]
            a6 += codebook[idx[j + np.uint64(6)]] * x[cols[j + np.uint64(6)]]
            a7 += codebook[idx[j + np.uint64(7)]] * x[cols[j + np.uint64(7)]]
            j += eight
        while j < end:
            a0 += codebook[idx[j]] * x[cols[j]]
            j += one
        y[r] = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


# Indexing y[r, b] and x[c, b] directly, not through row views (y[r], x[c]): the views cost an
# array object per survivor, measured 5x slower (AlexNet fc6 at 9 %, batch 32, loaded machine:
# 851 -> 170 ms; scipy fp32 CSR 444 ms, dense 866 ms).
@numba.njit(parallel=True, cache=True, nogil=True)  # the inner loop over b vectorizes
def _shared_matmul(rowptr, cols, idx, codebook, x, y):
    n = x.shape[1]
    for r in numba.prange(rowptr.size - 1):
        for b in range(n):
            y[r, b] = np.float32(0.0)
        j, end = np.uint64(rowptr[r]), np.uint64(rowptr[r + 1])
        while j < end:
            w = codebook[idx[j]]
            c = np.uint64(cols[j])
            for b in range(n):  # tiling b (to keep y's row in L1 for wide convs) measured 5x slower
                y[r, b] += w * x[c, b]
            j += np.uint64(1)


# The grouped layout (SharedCSR with group 4): each chunk is four columns sharing one codebook index,
# padding slots read x[width] = 0. Four chunks (16 survivors) per step into four accumulators: one
# codebook load per chunk instead of one per survivor, and still one loop per row with no branch on
# the data (looping over each centroid's run instead costs a mispredicted exit per run: no faster).
@numba.njit(inline="always")
def _sum4(x, cols, j):
    """x summed over the four columns of the chunk starting at slot j."""
    return (x[cols[j]] + x[cols[j + np.uint64(1)]]) + (x[cols[j + np.uint64(2)]] + x[cols[j + np.uint64(3)]])


@numba.njit(parallel=True, cache=True, nogil=True)
def _grouped_matvec(rowptr, cols, idx, codebook, x, y):
    one, four = np.uint64(1), np.uint64(4)
    for r in numba.prange(rowptr.size - 1):
        a0 = a1 = a2 = a3 = np.float32(0.0)
        c, end = np.uint64(rowptr[r]), np.uint64(rowptr[r + 1])
        while c + four <= end:
            j = c * four
            a0 += codebook[idx[c]] * _sum4(x, cols, j)
            a1 += codebook[idx[c + one]] * _sum4(x, cols, j + four)
            a2 += codebook[idx[c + np.uint64(2)]] * _sum4(x, cols, j + np.uint64(8))
            a3 += codebook[idx[c + np.uint64(3)]] * _sum4(x, cols, j + np.uint64(12))
            c += four
        while c < end:
            a0 += codebook[idx[c]] * _sum4(x, cols, c * four)
            c += one
        y[r] = (a0 + a1) + (a2 + a3)


# Batch n: the chunk's four x rows are summed, then multiplied once, so y's row is read and written once
# per chunk, not per survivor. Measured (throwaway script, 4096 x 9216 at 9 %, 32 centroids, batch 32,
# idle 2-core Zen 5, best of 60): 5.1 ms as group 1, 2.5 ms grouped; 3.7 ms when x's rows are not
# 64-byte aligned (each 128-byte row then spans three cache lines), hence the aligned copy below.
@numba.njit(parallel=True, cache=True, nogil=True)
def _grouped_matmul(rowptr, cols, idx, codebook, x, y):
    n, one, four = x.shape[1], np.uint64(1), np.uint64(4)
    for r in numba.prange(rowptr.size - 1):
        for b in range(n):
            y[r, b] = np.float32(0.0)
        for c in range(np.uint64(rowptr[r]), np.uint64(rowptr[r + 1])):
            w, j = codebook[idx[c]], c * four
            c0, c1 = np.uint64(cols[j]), np.uint64(cols[j + one])
            c2, c3 = np.uint64(cols[j + np.uint64(2)]), np.uint64(cols[j + np.uint64(3)])
            for b in range(n):
                y[r, b] += w * ((x[c0, b] + x[c1, b]) + (x[c2, b] + x[c3, b]))


# numba's threading layer: OpenMP, the pool torch's own ops run on (both load the one libgomp), unless
# $NUMBA_THREADING_LAYER says otherwise (``_start_pool``). Measured on an idle 2-core Zen 5 (``python
# benchmarks/bench_runtime.py --only alexnet-64``, commit 15671da), AlexNet's fc layers at batch 1 /
# 32: OpenMP 1.72 / 8.8 ms, 'workqueue' 3.39 / 16.3 ms (no faster than one thread: its sleeping
# worker rarely got the second core from torch's spinning OpenMP threads).


@numba.njit(parallel=True, cache=True)
def _touch(a):
    for i in numba.prange(a.size):
        a[i] = np.float32(0.0)


_pool_started = False


def _start_pool() -> None:
    """Start numba's thread pool once, keeping torch's thread count as it was.

    numba's OpenMP layer and torch share one libgomp (the same soname), and the pool's first launch
    sets OpenMP's thread count for the whole process to ``NUMBA_NUM_THREADS``: torch's ops then ran
    on every core whatever ``torch.set_num_threads`` said. Measured (throwaway script, 2-core
    machine with both cores taken by a training job): dense ResNet-18 at 224 px, batch 1, on
    ``torch.set_num_threads(1)`` took 47 ms before any numba launch and 934 ms after one
    (``torch.get_num_threads()`` had become 2; each op then waited for its second thread)."""
    global _pool_started
    if not _pool_started:
        torch_threads = torch.get_num_threads()
        if "NUMBA_THREADING_LAYER" not in os.environ and "OpenMP" in torch.__config__.parallel_info():
            # the pool torch's ops already use: one set of threads, none spinning while the other works
            # (numba's default prefers TBB when installed, a second pool beside torch's)
            numba.config.THREADING_LAYER = "omp"
        try:
            _touch(np.zeros(1, np.float32))
        except ValueError:  # no OpenMP layer in this numba build: its default order
            numba.config.THREADING_LAYER = "default"
            _touch(np.zeros(1, np.float32))
        _pool_started = True
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)


def match_torch_threads() -> None:
    """Run the kernels on as many threads as torch's ops use (``torch.set_num_threads``), never more
    than numba's pool holds (``NUMBA_NUM_THREADS``, the cores by default), and leave torch's count
    as it was (``_start_pool``)."""
    _start_pool()
    wanted = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    if numba.get_num_threads() != wanted:
        numba.set_num_threads(wanted)


def shared_matmul(rowptr, cols, idx, codebook, x: np.ndarray, group: int = 1) -> np.ndarray:
    """``W @ x`` for the shared-weight CSR ``W`` (out, in) and ``x`` float32 (in,) or (in, n);
    ``group``: column slots per codebook index (``helpers.runtime.sparse.SharedCSR``: 1 or 4).

    The kernels do no bounds checks: the caller (``helpers.runtime.sparse``) checks ``x``'s length."""
    if group not in (1, 4):
        raise ValueError(f"group={group!r}: the kernels take 1 or 4")
    match_torch_threads()
    rows = rowptr.size - 1
    if group == 4 or (x.ndim == 2 and not _aligned(x)):
        padded = _aligned_empty((x.shape[0] + (group == 4), *x.shape[1:]))
        padded[:x.shape[0]] = x
        padded[x.shape[0]:] = 0.0  # what the padding slots' column (x.shape[0]) reads
        x = padded
    else:
        x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.empty((rows, *x.shape[1:]), dtype=np.float32)
    kernels = {(1, 1): _shared_matvec, (1, 2): _shared_matmul, (4, 1): _grouped_matvec, (4, 2): _grouped_matmul}
    kernels[group, x.ndim](rowptr, cols, idx, codebook, x, y)
    return y


def _aligned(x: np.ndarray) -> bool:
    return x.dtype == np.float32 and x.flags.c_contiguous and x.ctypes.data % 64 == 0


def _aligned_empty(shape) -> np.ndarray:
    """float32 array whose data starts on a 64-byte cache line."""
    size = int(np.prod(shape))
    raw = np.empty(size + 16, dtype=np.float32)
    start = (-raw.ctypes.data % 64) // 4
    return raw[start:start + size].reshape(shape)
