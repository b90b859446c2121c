"""Sparse matrix products straight from the shared-weight form (paper section 3 + EIE's idea).

A pruned, quantized layer is kept as row-compressed survivors: ``rowptr`` (int32, one per output
row + 1), ``cols`` (uint16 column of each survivor when the layer has at most 65,536 inputs, else
int32) and ``idx`` (uint8 codebook index for <= 256 centroids, else uint16), plus the float32
codebook. That is 3 bytes per survivor instead of fp32 CSR's 8 (value + int32 column), and the
kernel looks the weight up in the codebook (32 or 256 floats: always in L1) as it multiplies.

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

Importing this module imports numba (compiling happens on first call); ``helpers.sparse`` imports
it only when the shared-weight kernel is used, and falls back to scipy's fp32 CSR without numba.
"""

from __future__ import annotations

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
# Sorting each row's survivors by codebook index (summing x per centroid, one multiply per centroid:
# half the loads per survivor) was tried in a throwaway script: at most 15 % faster on fc6, no faster
# on fc7 (groups padded to 8), so not kept.
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


# numba's threading layer is left to numba ("default": tbb if installed, else OpenMP, else its
# 'workqueue'), or to $NUMBA_THREADING_LAYER. Measured on an idle 2-core Zen 5 (``python
# benchmarks/bench_runtime.py --only alexnet-64``, commit 15671da), AlexNet's fc layers at batch 1 /
# 32: OpenMP 1.72 / 8.8 ms, 'workqueue' 3.39 / 16.3 ms (no faster than one thread: its sleeping
# worker rarely got the second core from torch's spinning OpenMP threads). On 2 cores loaded by other
# jobs an earlier machine showed the reverse (48 ms OpenMP, 28 ms 'workqueue'): there, set
# NUMBA_THREADING_LAYER=workqueue.


def shared_matmul(rowptr, cols, idx, codebook, x: np.ndarray) -> np.ndarray:
    """``W @ x`` for the shared-weight CSR ``W`` (out, in) and ``x`` float32 (in,) or (in, n).

    The kernels do no bounds checks: the caller (``helpers.sparse``) checks ``x``'s length."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if numba.get_num_threads() != torch.get_num_threads():
        numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if x.ndim == 1:
        y = np.empty(rowptr.size - 1, dtype=np.float32)
        _shared_matvec(rowptr, cols, idx, codebook, x, y)
    else:
        y = np.empty((rowptr.size - 1, x.shape[1]), dtype=np.float32)
        _shared_matmul(rowptr, cols, idx, codebook, x, y)
    return y
