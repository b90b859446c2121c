"""Dense convolutions that stay small in memory: codebook indices kept, the weight expanded per call.

A convolution above its break-even density runs dense (``helpers.runtime.sparse.BREAK_EVEN``), and
as fp32 its weight takes 4 bytes a weight. The file already describes it as codebook indices, so
``IndexedConv2d`` keeps those (uint8, or uint16 for a full 256-entry codebook, whose extra entry is
the zero of pruned weights) and expands them into a temporary fp32 weight at each call, with a
numba loop (one load and one store a weight, no int64 temporary). The expansion costs the same
whatever the input, and the convolution costs a weight's worth of work at every output position,
so the expansion is hidden where a layer has many output positions: ``load_sparse`` keeps a layer
indexed when its output plane at the file's image size has at least ``MIN_POSITIONS`` positions
(``output_positions``). Measured: see ``MIN_POSITIONS``.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .sparse_kernels import match_torch_threads

# Output positions (oh * ow at batch 1) from which a dense convolution keeps its weight as indices.
# Measured (throwaway script, one thread, best of 20 by CPU time, a training job on the other core,
# half the weights kept, 64 centroids): the expansion takes ~0.4 ns a weight (0.16 ms for
# EfficientNet-Lite0's 1x1 head conv, 320 -> 1280), which is 91 % of that convolution's time on a
# 4 x 4 map, 29 % on 8 x 8 and 7.8 % on 16 x 16 (256 positions); 3.0 % of a 3x3 128 -> 128 on 28 x 28.
MIN_POSITIONS = 256


@numba.njit(parallel=True, cache=True, nogil=True)
def _expand(indices, codebook, out):
    for i in numba.prange(indices.size):
        out[i] = codebook[indices[i]]


class IndexedConv2d(nn.Module):
    """Inference-only ``nn.Conv2d`` whose weight is kept as codebook indices (1 or 2 bytes a weight)."""

    def __init__(self, conv: nn.Conv2d, layer):
        super().__init__()
        codebook = np.append(np.asarray(layer.codebook, np.float32), np.float32(0.0))  # last: pruned
        index_type = np.uint8 if codebook.size <= 256 else np.uint16
        indices = np.full(int(np.prod(layer.shape)), codebook.size - 1, dtype=index_type)
        indices[np.asarray(layer.positions)] = np.asarray(layer.indices).astype(index_type)
        self.shape = tuple(int(s) for s in layer.shape)
        self.indices, self.codebook = indices, codebook
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().float().clone())

    @property
    def sparse_nbytes(self) -> int:
        return self.indices.nbytes + self.codebook.nbytes

    def weight(self) -> torch.Tensor:
        match_torch_threads()
        out = np.empty(self.indices.size, dtype=np.float32)
        _expand(self.indices, self.codebook, out)
        return torch.from_numpy(out).view(self.shape)

    def forward(self, x):
        return F.conv2d(x, self.weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        return (f"{self.shape[1] * self.groups}, {self.shape[0]}, kernel_size={tuple(self.shape[2:])}, "
                f"stride={self.stride}, groups={self.groups}, {self.indices.dtype.name} indices")


def output_positions(net: nn.Module, names, in_channels: int, image_size: int) -> dict:
    """Output positions (oh * ow) of the named convolutions for one image of ``image_size``, from a
    forward pass of ``net`` on the meta device (no memory, no compute); {} when ``net`` is not on the
    meta device (a model of the user's, not copied for this) or cannot run there."""
    if not all(t.is_meta for t in [*net.parameters(), *net.buffers()]):
        return {}
    found, hooks = {}, []
    for name in names:
        module = net.get_submodule(name)
        hooks.append(module.register_forward_hook(
            lambda m, i, out, name=name: found.__setitem__(name, int(out.shape[-1] * out.shape[-2]))))
    try:
        with torch.no_grad():
            net.eval()(torch.empty(1, in_channels, image_size, image_size, device="meta"))
    except Exception:  # any model, any forward: without the sizes, every layer stays plain dense
        return {}
    finally:
        for hook in hooks:
            hook.remove()
    return found
