"""Sparse inference straight from the compressed file: small in memory and fast, not only on disk.

``load_sparse(path)`` (also ``helpers.load_compressed(path, runtime="sparse")``) returns an
inference-only ``nn.Module`` whose pruned layers keep only their survivors, in the shared-weight
form the file already describes (paper section 3; EIE's idea): per survivor a uint16 column and a
uint8 codebook index (``SharedCSR``: 3 bytes, against 4 per dense fp32 weight and 8 per fp32 CSR
survivor), multiplied through the codebook inside a numba kernel (``helpers.runtime.sparse_kernels``).
Where a row's survivors per centroid are many (fc layers with 32 centroids), four survivors with
the same index share one (``group`` 4, ~2.4 bytes a survivor), and the kernel multiplies once per
four: AlexNet's fc6 at the paper's 9 % then takes 0.38 ms instead of 0.61 at batch 1, and 2.5 ms
instead of 5.1 at batch 32 (``SharedCSR`` and ``helpers.runtime.sparse_kernels`` say how measured).
The layout is built from the file's survivor positions: no dense weight of a sparse layer is ever
materialised, not even while loading.

Which layers run sparse is decided per layer from its density and the measured cost of each form
(``BREAK_EVEN``): a layer runs sparse when its density is below the break-even density of its
kind. Linear layers, measured on the idle 2-core Zen 5 development machine (best of 10 rounds,
``python benchmarks/bench_runtime.py --calibrate``, commit 2c1c12c's kernels): AlexNet's fc6 is
faster sparse at every density tried up to 80 % at batch 1 (dense fp32 is memory-bound at 4 bytes
a weight; 0.68 vs 5.5 ms at 10 %, 3.9 vs 5.2 ms at 80 %) and up to 66 % at batch 32 (3.1 vs 18.7 ms
at 10 %), so Linear layers run sparse below 50 %. Convolutions run through the direct kernel
(``helpers.runtime.conv_kernels``); ``--calibrate --threads 1`` (commit 720fab4's kernels, one thread,
the other core taken by a training job) put the crossing of a 3x3 128 -> 128 convolution on 28 x 28
(ResNet-18's layer2 at 224 px) at 41 % at batch 1 and 32 (0.64 vs 2.1 ms at 10 %), and of a 1x1
112 -> 672 on 14 x 14 at 33 % and 35 % (0.14 vs 0.32 ms at 10 %): 40 % and 33 %. Depthwise
convolutions stay dense (one input channel per output: nothing for a sparse product to share).

Without numba the sparse layers use scipy's fp32 CSR (8 bytes per survivor), with one warning.
The runtime is CPU-only: ``map_location`` other than cpu gives the plain dense load (no sparse
path has been measured faster on a GPU here).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..coding import fileformat
from .. import models
from .indexed import MIN_POSITIONS, IndexedConv2d, output_positions
from .pooling import replace_max_pools
from .shared_csr import GROUP, SharedCSR

# density below which a layer runs sparse, by kind (see the module docstring for how measured)
BREAK_EVEN = {"linear": 0.5, "conv": 0.4, "conv1x1": 0.33}
KERNELS = ("auto", "shared", "csr")


def _matmul_fn(matrix: SharedCSR, kernel: str):
    """A function x (in,) or (in, n) float32 -> W @ x, for the chosen kernel."""
    if kernel == "shared":
        from .sparse_kernels import shared_matmul

        args = matrix.rowptr, matrix.cols, matrix.idx, matrix.codebook
        return lambda x: shared_matmul(*args, x, group=matrix.group), matrix.nbytes
    csr = matrix.to_scipy()  # 8 bytes per survivor
    return (lambda x: np.asarray(csr @ x, dtype=np.float32)), csr.data.nbytes + csr.indices.nbytes + \
        csr.indptr.nbytes


class _SparseBase(nn.Module):
    def __init__(self, matrix: SharedCSR, bias, kernel: str):
        super().__init__()
        self.in_features, self.out_features = matrix.shape[1], matrix.shape[0]
        self.kernel, self.density, self.group = kernel, matrix.density, matrix.group
        self._matmul, self.sparse_nbytes = _matmul_fn(matrix, kernel)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    def _product(self, x2: torch.Tensor) -> torch.Tensor:
        """W @ x2 for x2 (in, n): (out, n)."""
        if x2.shape[0] != self.in_features:
            raise ValueError(f"input has {x2.shape[0]} features, the layer takes {self.in_features}")
        if x2.numel() == 0 or self.out_features == 0:  # a batch of 0, or no inputs or outputs: the
            return torch.zeros(self.out_features, x2.shape[1])  # kernels assume both; the sum is empty
        x_np = x2.detach().to("cpu", torch.float32).numpy()
        return torch.from_numpy(self._matmul(x_np[:, 0] if x_np.shape[1] == 1 else x_np)).view(
            self.out_features, x2.shape[1])


class SparseLinear(_SparseBase):
    """Inference-only ``nn.Linear`` with a sparse weight; any batch size, CPU."""

    def forward(self, x):
        lead = x.shape[:-1]
        x2 = x.reshape(math.prod(lead), x.shape[-1])  # not -1: ambiguous for 0 elements
        y = self._product(x2.t().contiguous() if x2.shape[0] != 1 else x2.reshape(-1, 1)).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self):
        return (f"{self.in_features}, {self.out_features}, density={self.density:.3f}, kernel={self.kernel}, "
                f"group={self.group}")


class SparseConv2d(_SparseBase):
    """Inference-only ``nn.Conv2d`` (zero padding, any stride, dilation and groups) with a sparse weight.

    With the shared-weight kernel: a direct sparse convolution over the zero-padded input
    (``helpers.runtime.conv_kernels``). With scipy's CSR (no numba): im2col (``F.unfold``) x sparse
    weight, groups=1 only."""

    def __init__(self, conv: nn.Conv2d, matrix: SharedCSR, kernel: str):
        super().__init__(matrix, conv.bias, kernel)
        self.in_channels, self.groups = conv.in_channels, conv.groups
        self.kernel_size, self.stride, self.padding, self.dilation = (conv.kernel_size, conv.stride,
                                                                      conv.padding, conv.dilation)
        if matrix.group != 1:
            raise ValueError(f"a convolution's weight must be in the ungrouped layout (group 1), got group {matrix.group}")
        if kernel == "csr" and conv.groups != 1:
            raise ValueError("the scipy CSR path takes groups=1 only; install numba for grouped convolutions")
        self._csr = (matrix.rowptr, matrix.cols, matrix.idx, matrix.codebook) if kernel == "shared" else None

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input of shape {tuple(x.shape)}: the layer takes (N, {self.in_channels}, H, W)")
        n, _, h, w = x.shape
        oh, ow = (_out_size(s, k, st, p, d) for s, k, st, p, d in
                  zip((h, w), self.kernel_size, self.stride, self.padding, self.dilation))
        if oh < 1 or ow < 1:
            raise ValueError(f"input of {h}x{w} is smaller than the layer's kernel {self.kernel_size}")
        y = self._direct(x, oh, ow) if self._csr is not None else self._unfolded(x, n, oh, ow)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def _direct(self, x, oh, ow):
        from .conv_kernels import direct_conv

        x = x.detach().to("cpu", torch.float32).contiguous()
        return torch.from_numpy(direct_conv(*self._csr, x.numpy(), self.padding, (oh, ow), self.kernel_size,
                                            self.stride, self.dilation, self.groups))

    def _unfolded(self, x, n, oh, ow):
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # (n, C*k*k, L)
        cols = cols[0] if n == 1 else cols.transpose(0, 1).reshape(cols.shape[1], n * cols.shape[2])
        y = self._product(cols.contiguous()).view(self.out_features, n, oh * ow).transpose(0, 1)
        return y.reshape(n, self.out_features, oh, ow)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_features}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}, density={self.density:.3f}, kernel={self.kernel}")


def _out_size(size, k, stride, pad, dil):
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


def layer_kind(module: nn.Module) -> str | None:
    """'linear', 'conv' (a Conv2d the sparse path supports) or None (keep dense)."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv2d) and type(module).forward is nn.Conv2d.forward \
            and module.padding_mode == "zeros" and not isinstance(module.padding, str) \
            and not (module.groups > 1 and module.groups == module.in_channels):  # depthwise: dense
        return "conv1x1" if module.kernel_size == (1, 1) else "conv"
    return None


def choose_layout(module: nn.Module, density: float, break_even: dict | None = None, kernel: str = "shared") -> str:
    """'sparse' when the layer's kind runs sparse and its density is under that kind's break-even
    (grouped convolutions only with the shared-weight kernel)."""
    kind = layer_kind(module)
    if kind is not None and kind.startswith("conv") and module.groups != 1 and kernel != "shared":
        return "dense"
    given = break_even or {}
    # an override for "conv" holds for 1x1 convolutions too, unless they have their own
    limits = {**BREAK_EVEN, **({"conv1x1": given["conv"]} if "conv" in given else {}), **given}
    return "sparse" if kind is not None and density < limits[kind] else "dense"


def resolve_kernel(kernel: str) -> str:
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r}: use one of {', '.join(KERNELS)}")
    try:
        import numba  # noqa: F401
    except ImportError:
        if kernel == "shared":
            raise ImportError("kernel='shared' needs numba: pip install numba (or use kernel='csr')") from None
        if kernel == "auto":
            warnings.warn("numba is not installed: sparse layers use scipy's fp32 CSR (8 bytes per "
                          "survivor, slower); pip install numba for the shared-weight kernel", stacklevel=3)
        return "csr"
    return "csr" if kernel == "csr" else "shared"


def load_sparse(path, map_location="cpu", *, model=None, kernel: str = "auto", break_even: dict | None = None,
                indexed: bool = True):
    """The compressed file at ``path`` as an inference-only module with sparse layers (see module doc).

    ``model``: a fresh instance of the architecture, for a file of your own class. ``kernel``:
    'shared' (numba, 3 bytes per survivor), 'csr' (scipy fp32) or 'auto' (shared when numba is
    installed). ``break_even``: override the per-kind densities (e.g. ``{"conv": 0.0}`` keeps every
    convolution dense, ``{"linear": 1.1}`` makes every Linear sparse). ``indexed``: convolutions that
    stay dense keep their codebook indices where that costs little time (``helpers.runtime.indexed``).
    ``model.sparse_plan`` says how each layer runs: 'sparse', 'indexed' or 'dense'.
    """
    if torch.device(map_location).type != "cpu":
        return fileformat.load_compressed(path, map_location, quantized=False, model=model)
    kernel = resolve_kernel(kernel)
    with open(path, "rb") as f:
        parsed, net = fileformat.open_for_model(f.read(), model)
    found = models.compressible_layers(net)
    plan = {name: choose_layout(found[name], s.positions.size / max(math.prod(s.shape), 1), break_even, kernel)
            for name, s in parsed.layers.items()}
    if indexed and kernel == "shared":
        plan.update(_indexed_layers(net, parsed, found, plan))
    values = dict(parsed.tensors)
    values.update({f"{n}.weight": parsed.layers[n].dense() for n, how in plan.items() if how == "dense"})
    missing, unexpected = net.load_state_dict(values, assign=True, strict=False)
    assert not unexpected and set(missing) == {f"{n}.weight" for n, how in plan.items() if how != "dense"}
    for name, how in plan.items():
        if how == "indexed":
            net.set_submodule(name, IndexedConv2d(found[name], parsed.layers.pop(name)))
        elif how == "sparse":
            old = found[name]  # convolutions: one codebook index per survivor (the direct kernel's layout)
            grouping = None if kernel == "shared" and isinstance(old, nn.Linear) else 1
            matrix = SharedCSR.from_layer(parsed.layers.pop(name), group=grouping)
            new = SparseLinear(matrix, old.bias, kernel) if isinstance(old, nn.Linear) else \
                SparseConv2d(old, matrix, kernel)
            net.set_submodule(name, new)
    replace_max_pools(net)  # torch's NCHW max-pool is slow on CPU (helpers.runtime.pooling)
    net.metadata, net.sparse_plan = parsed.header["metadata"], plan
    del parsed, values
    if any(t.is_meta for t in [*net.parameters(), *net.buffers()]):
        raise fileformat.CompressedFileError("the file leaves some of the model's tensors unset")
    return net.eval().requires_grad_(False)


def _indexed_layers(net, parsed, found, plan) -> dict:
    """{name: 'indexed'} for the dense convolutions with at least ``MIN_POSITIONS`` output positions
    at the file's image size (none when the file does not say its size)."""
    args = parsed.header.get("create_args") or {}
    size = parsed.header["metadata"].get("image_size") or args.get("image_size")
    dense_convs = [n for n, how in plan.items() if how == "dense" and isinstance(found[n], nn.Conv2d)
                   and type(found[n]).forward is nn.Conv2d.forward and found[n].padding_mode == "zeros"]
    if not dense_convs or not isinstance(size, int) or not isinstance(args.get("in_channels"), int):
        return {}
    positions = output_positions(net, dense_convs, args["in_channels"], size)
    return {n: "indexed" for n in dense_convs if positions.get(n, 0) >= MIN_POSITIONS}


def warm_up() -> None:
    """Compile (or load from numba's cache) the shared-weight kernels for the layouts loads build."""
    if resolve_kernel("auto") != "shared":
        return
    from .sparse_kernels import shared_matmul

    for col_type in (np.uint16, np.int32):
        for idx_type, group in ((np.uint8, 1), (np.uint16, 1), (np.uint8, GROUP)):
            args = np.array([0, 1], np.int32), np.zeros(group, col_type), np.zeros(1, idx_type), np.ones(1, np.float32)
            shared_matmul(*args, np.ones(1, np.float32), group=group)
            shared_matmul(*args, np.ones((1, 2), np.float32), group=group)
    from .conv_kernels import direct_conv

    for col_type in (np.uint16, np.int32):
        for idx_type in (np.uint8, np.uint16):
            args = np.array([0, 1], np.int32), np.zeros(1, col_type), np.zeros(1, idx_type), np.ones(1, np.float32)
            direct_conv(*args, np.ones((1, 1, 2, 2), np.float32), (0, 0), (2, 2), (1, 1), (1, 1), (1, 1), 1)


def weight_bytes(module: nn.Module) -> int:
    """Resident bytes of a module's weights: parameters, buffers and sparse layers' survivors."""
    dense = sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
    return dense + sum(m.sparse_nbytes for m in module.modules() if isinstance(m, (_SparseBase, IndexedConv2d)))
