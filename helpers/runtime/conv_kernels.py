"""Direct sparse convolution straight from the shared-weight form: no patch matrix, no dense weight.

A pruned convolution's survivors are kept per output channel as ``SharedCSR`` rows
(``helpers.runtime.sparse``): a uint16 column ``c * kh * kw + i * kw + j`` and a uint8 codebook
index each. For one output channel, each survivor adds ``w * x[c]`` shifted by ``(i, j)`` (and
strided) to the output plane: an axpy over the output positions whose input row is contiguous at
stride 1. This is the direct sparse convolution of Park et al. (ICLR 2017) and, for 1x1
convolutions, XNNPACK's sparse x dense product over the spatial positions (NCHW: each survivor
multiplies one contiguous row of H*W inputs). The input is zero-padded once per call, so the inner
loop has no bounds checks; a survivor's column becomes an offset into the padded input through a
table of ``C/groups * kh * kw`` entries built per input size (``column_offsets``), so the kernel
never divides.

Why not im2col x sparse (the previous path, kept for reference in the git history): ``F.unfold``
builds a (C*kh*kw) x (oh*ow) matrix (ResNet-18's layer1 at 224 px: 576 x 3136 floats, 7 MB per
call) and the kernel then gathers from it; the direct form reads the input in place.

Why numba: as in ``helpers.runtime.sparse_kernels`` (codebook-indexed survivors, no maintained
library takes them; compiled at run time from PyPI wheels, cached in ``__pycache__``).
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from .sparse_kernels import match_torch_threads

VECTOR = 8  # floats in one AVX2 register: the kernel's loops run in whole multiples of it


# One task per (image, output channel): its output plane (at most 112 x 115 floats, 52 KB, for
# ResNet's first layer at 224 px) stays in cache while every survivor of that channel adds to it.
# Stride 1 everywhere (strided convolutions read polyphase planes, see ``direct_conv``), and the
# plane is computed at the phase planes' row width Wq: a survivor's whole window is then one
# contiguous run of ``span`` inputs, one loop that vectorizes (the ``Wq - ow`` columns past each
# output row are computed and dropped). Eight survivors per step: one load and store of the output
# per eight multiply-adds. Unsigned offsets for the reason given in sparse_kernels.
@numba.njit(parallel=True, cache=True, nogil=True)
def _direct_conv(rowptr, cols, idx, codebook, offsets, x, y, out_channels, out_per_group, group_step,
                 image_step, span):
    plane = y.shape[1]
    for task in numba.prange(y.shape[0]):
        image, oc = task // out_channels, task % out_channels
        base = np.uint64(image * image_step + (oc // out_per_group) * group_step)
        out = y[task]
        for p in range(plane):
            out[p] = np.float32(0.0)
        j, end = np.uint64(rowptr[oc]), np.uint64(rowptr[oc + 1])
        while j + np.uint64(8) <= end:
            w0, w1 = codebook[idx[j]], codebook[idx[j + np.uint64(1)]]
            w2, w3 = codebook[idx[j + np.uint64(2)]], codebook[idx[j + np.uint64(3)]]
            w4, w5 = codebook[idx[j + np.uint64(4)]], codebook[idx[j + np.uint64(5)]]
            w6, w7 = codebook[idx[j + np.uint64(6)]], codebook[idx[j + np.uint64(7)]]
            s0, s1 = base + np.uint64(offsets[cols[j]]), base + np.uint64(offsets[cols[j + np.uint64(1)]])
            s2, s3 = base + np.uint64(offsets[cols[j + np.uint64(2)]]), base + np.uint64(offsets[cols[j + np.uint64(3)]])
            s4, s5 = base + np.uint64(offsets[cols[j + np.uint64(4)]]), base + np.uint64(offsets[cols[j + np.uint64(5)]])
            s6, s7 = base + np.uint64(offsets[cols[j + np.uint64(6)]]), base + np.uint64(offsets[cols[j + np.uint64(7)]])
            for t in range(span):
                u = np.uint64(t)
                out[u] += (((w0 * x[s0 + u] + w1 * x[s1 + u]) + (w2 * x[s2 + u] + w3 * x[s3 + u]))
                           + ((w4 * x[s4 + u] + w5 * x[s5 + u]) + (w6 * x[s6 + u] + w7 * x[s7 + u])))
            j += np.uint64(8)
        while j < end:
            w, s0 = codebook[idx[j]], base + np.uint64(offsets[cols[j]])
            for t in range(span):
                out[np.uint64(t)] += w * x[s0 + np.uint64(t)]
            j += np.uint64(1)


@functools.lru_cache(maxsize=128)  # one table per layer and input size, a few KB; read only by the kernel
def column_offsets(in_per_group: int, kernel_size, dilation, stride, plane_hw) -> np.ndarray:
    """Offset of each weight column ``c * kh * kw + i * kw + j`` in one image's polyphase input
    (C, sh * sw phases, Hq, Wq): tap (i, j) reads phase ``(i*dh % sh, j*dw % sw)`` shifted by
    ``(i*dh // sh, j*dw // sw)``. Cached: the same layer on the same input size asks again each call."""
    (kh, kw), (dh, dw), (sh, sw), (hq, wq) = kernel_size, dilation, stride, plane_hw
    c, i, j = np.meshgrid(np.arange(in_per_group), np.arange(kh), np.arange(kw), indexing="ij")
    phase = (i * dh % sh) * sw + (j * dw % sw)
    offsets = ((c * sh * sw + phase) * hq + i * dh // sh) * wq + j * dw // sw
    return offsets.reshape(-1).astype(np.int64)


def plane_size(size_hw, padding, stride) -> tuple[int, int]:
    """(Hq, Wq): the size of each polyphase plane of an input of ``size_hw`` once zero-padded."""
    return tuple(-(-(size + 2 * pad) // step) for size, pad, step in zip(size_hw, padding, stride))


def polyphase(x: np.ndarray, padding, stride) -> tuple[np.ndarray, tuple]:
    """(flat buffer, its shape (n, C * sh * sw, Hq, Wq)) of ``x`` (n, C, H, W) zero-padded by
    ``padding`` and split into phases: phase (a, b) of a channel holds ``padded[a::sh, b::sw]``,
    so a stride-(sh, sw) convolution reads each phase at stride 1. One copy of the input; the
    buffer ends with ``VECTOR`` zeros that the kernel's last whole vector may read."""
    n, channels, h, w = x.shape
    (ph, pw), (sh, sw) = padding, stride
    hq, wq = plane_size((h, w), padding, stride)
    flat = np.zeros(n * channels * sh * sw * hq * wq + VECTOR, dtype=np.float32)
    planes = flat[:-VECTOR].reshape(n, channels, sh, sw, hq, wq)
    for a in range(sh):
        first_row, row0 = _first_inside(a, ph, sh)  # first plane row inside the image, its image row
        rows = len(range(row0, h, sh))
        for b in range(sw):
            first_col, col0 = _first_inside(b, pw, sw)
            cols = len(range(col0, w, sw))
            planes[:, :, a, b, first_row:first_row + rows, first_col:first_col + cols] = x[:, :, row0::sh, col0::sw]
    return flat, (n, channels * sh * sw, hq, wq)


def _first_inside(phase: int, pad: int, step: int) -> tuple[int, int]:
    """(q, r): the first plane index q of a phase whose padded position q * step + phase is inside
    the image, and that image position r = q * step + phase - pad."""
    q = max(0, -(-(pad - phase) // step))
    return q, q * step + phase - pad


def direct_conv(rowptr, cols, idx, codebook, x: np.ndarray, padding, out_hw, kernel_size, stride, dilation,
                groups: int) -> np.ndarray:
    """Convolution of ``x`` (n, C, H, W) float32, zero-padded by ``padding``, with the shared-weight
    CSR weight (out, C/groups * kh * kw): (n, out, oh, ow) float32. No bounds checks in the kernel:
    ``helpers.runtime.sparse.SparseConv2d`` checks the shapes, ``SharedCSR`` the survivors."""
    match_torch_threads()
    n, channels = x.shape[:2]
    out_channels, (oh, ow) = rowptr.size - 1, out_hw
    if n * out_channels * oh * ow == 0:
        return np.zeros((n, out_channels, oh, ow), dtype=np.float32)
    flat, (_, phases, hq, wq) = polyphase(x, padding, stride)
    in_per_group = channels // groups
    offsets = column_offsets(in_per_group, tuple(kernel_size), tuple(dilation), tuple(stride), (hq, wq))
    # each survivor's run rounded up to whole 8-float vectors: no scalar remainder loop (a 2 x 2 plane at
    # 32 px VGG16's conv5 is a run of 6); the extra outputs land in columns that are dropped, and
    # the extra inputs they read are the zeros that end the buffer
    span = -(-((oh - 1) * wq + ow) // VECTOR) * VECTOR
    y = np.empty((n * out_channels, max(oh * wq, span)), dtype=np.float32)
    _direct_conv(rowptr, cols, idx, codebook, offsets, flat, y, out_channels, out_channels // groups,
                 in_per_group * phases // channels * hq * wq, phases * hq * wq, span)
    y = y[:, :oh * wq].reshape(n, out_channels, oh, wq)
    return np.ascontiguousarray(y[..., :ow])
