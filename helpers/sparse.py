"""Sparse inference straight from the compressed file: small in memory and fast, not only on disk.

``load_sparse(path)`` (also ``helpers.load_compressed(path, runtime="sparse")``) returns an
inference-only ``nn.Module`` whose pruned layers keep only their survivors, in the shared-weight
form the file already describes (paper section 3; EIE's idea): per survivor a uint8 codebook index
and a uint16 column (``SharedCSR``: 3 bytes, against 4 per dense fp32 weight and 8 per fp32 CSR
survivor), multiplied through the codebook inside a numba kernel (``helpers.sparse_kernels``).
The layout is built from the file's survivor positions: no dense weight of a sparse layer is ever
materialised, not even while loading.

Which layers run sparse is decided per layer from its density and the measured cost of each form
(``BREAK_EVEN``): a layer runs sparse when its density is below the break-even density of its
kind, where the kernel's cost per survivor equals the dense op's cost per weight. Measured on the
2-core AVX2 development machine under a load average of 14 (best of 5 rounds, ``python
benchmarks/bench_runtime.py --calibrate``): AlexNet's fc6 (memory-bound dense, ~4 bytes per weight
per call) at batch 1 is 6x faster sparse at 2 %, 2x at 10 %, and breaks even near 21 %; its
conv3 at 224 px (dense through oneDNN, high arithmetic intensity; sparse as im2col x sparse)
breaks even near 6 %. So AlexNet at the paper's densities runs fc6 and fc7 (9 %) sparse, and its
fc8 (25 %, 0.4 MB) and convolutions (35-84 %) dense.

Without numba the sparse layers use scipy's fp32 CSR (8 bytes per survivor), with one warning.
The runtime is CPU-only: ``map_location`` other than cpu gives the plain dense load (no sparse
path has been measured faster on a GPU here).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import fileformat, models

# density below which a layer runs sparse, by kind (see the module docstring for how measured)
BREAK_EVEN = {"linear": 0.2, "conv": 0.06}
KERNELS = ("auto", "shared", "csr")


@dataclass
class SharedCSR:
    """A pruned, quantized 2-D weight (rows, cols) as row-compressed survivors through a codebook."""

    shape: tuple
    rowptr: np.ndarray    # int32 (rows + 1,)
    cols: np.ndarray      # uint16 when cols <= 65536, else int32
    idx: np.ndarray       # uint8 when the codebook has <= 256 entries, else uint16
    codebook: np.ndarray  # float32 (k,)

    @classmethod
    def from_layer(cls, layer: fileformat.SparseLayer) -> "SharedCSR":
        """From the file's flat C-order survivor positions; a conv weight (out, C, kh, kw) becomes
        (out, C*kh*kw), the column order of ``F.unfold``."""
        rows = int(layer.shape[0]) if layer.shape else 1
        width = math.prod(layer.shape[1:])
        row_of = layer.positions // width
        counts = np.bincount(row_of, minlength=rows)
        rowptr = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(counts, out=rowptr[1:])
        if rowptr[-1] >= 1 << 31:
            raise ValueError(f"{rowptr[-1]} survivors in one layer: more than the kernel's int32 row pointers")
        cols = layer.positions - row_of * width
        del row_of
        col_type = np.uint16 if width <= 1 << 16 else np.int32
        idx_type = np.uint8 if layer.codebook.size <= 256 else np.uint16
        return cls((rows, width), rowptr.astype(np.int32), cols.astype(col_type),
                   np.asarray(layer.indices).astype(idx_type), np.ascontiguousarray(layer.codebook, np.float32))

    @property
    def nbytes(self) -> int:
        return self.rowptr.nbytes + self.cols.nbytes + self.idx.nbytes + self.codebook.nbytes

    @property
    def density(self) -> float:
        return self.idx.size / max(math.prod(self.shape), 1)

    def to_scipy(self):
        """The same matrix as scipy fp32 CSR: the fallback kernel and the tests' oracle."""
        from scipy import sparse

        return sparse.csr_matrix((self.codebook[self.idx], self.cols.astype(np.int32), self.rowptr),
                                 shape=self.shape)


def _matmul_fn(matrix: SharedCSR, kernel: str):
    """A function x (in,) or (in, n) float32 -> W @ x, for the chosen kernel."""
    if kernel == "shared":
        from .sparse_kernels import shared_matmul

        args = matrix.rowptr, matrix.cols, matrix.idx, matrix.codebook
        return lambda x: shared_matmul(*args, x), matrix.nbytes
    csr = matrix.to_scipy()  # 8 bytes per survivor
    return (lambda x: np.asarray(csr @ x, dtype=np.float32)), csr.data.nbytes + csr.indices.nbytes + \
        csr.indptr.nbytes


class _SparseBase(nn.Module):
    def __init__(self, matrix: SharedCSR, bias, kernel: str):
        super().__init__()
        self.in_features, self.out_features = matrix.shape[1], matrix.shape[0]
        self.kernel, self.density = kernel, matrix.density
        self._matmul, self.sparse_nbytes = _matmul_fn(matrix, kernel)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    def _product(self, x2: torch.Tensor) -> torch.Tensor:
        """W @ x2 for x2 (in, n): (out, n)."""
        if x2.shape[0] != self.in_features:
            raise ValueError(f"input has {x2.shape[0]} features, the layer takes {self.in_features}")
        x_np = x2.detach().to("cpu", torch.float32).numpy()
        return torch.from_numpy(self._matmul(x_np[:, 0] if x_np.shape[1] == 1 else x_np)).view(
            self.out_features, x2.shape[1])


class SparseLinear(_SparseBase):
    """Inference-only ``nn.Linear`` with a sparse weight; any batch size, CPU."""

    def forward(self, x):
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        y = self._product(x2.t().contiguous() if x2.shape[0] > 1 else x2.reshape(-1, 1)).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, density={self.density:.3f}, kernel={self.kernel}"


class SparseConv2d(_SparseBase):
    """Inference-only ``nn.Conv2d`` (groups=1, zero padding): im2col x sparse weight."""

    def __init__(self, conv: nn.Conv2d, matrix: SharedCSR, kernel: str):
        super().__init__(matrix, conv.bias, kernel)
        self.kernel_size, self.stride, self.padding, self.dilation = (conv.kernel_size, conv.stride,
                                                                      conv.padding, conv.dilation)

    def forward(self, x):
        n, _, h, w = x.shape
        oh, ow = (_out_size(s, k, st, p, d) for s, k, st, p, d in
                  zip((h, w), self.kernel_size, self.stride, self.padding, self.dilation))
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # (n, C*k*k, L)
        cols = cols[0] if n == 1 else cols.transpose(0, 1).reshape(cols.shape[1], -1)
        y = self._product(cols.contiguous()).view(self.out_features, n, oh * ow).transpose(0, 1)
        y = y.reshape(n, self.out_features, oh, ow)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def extra_repr(self):
        return (f"{self.in_features}, {self.out_features}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, density={self.density:.3f}, kernel={self.kernel}")


def _out_size(size, k, stride, pad, dil):
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


def layer_kind(module: nn.Module) -> str | None:
    """'linear', 'conv' (a Conv2d the sparse path supports) or None (keep dense)."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros" \
            and not isinstance(module.padding, str):
        return "conv"
    return None


def choose_layout(module: nn.Module, density: float, break_even: dict | None = None) -> str:
    """'sparse' when the layer's kind runs sparse and its density is under that kind's break-even."""
    kind = layer_kind(module)
    limits = BREAK_EVEN if break_even is None else {**BREAK_EVEN, **break_even}
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


def load_sparse(path, map_location="cpu", *, model=None, kernel: str = "auto", break_even: dict | None = None):
    """The compressed file at ``path`` as an inference-only module with sparse layers (see module doc).

    ``model``: a fresh instance of the architecture, for a file of your own class. ``kernel``:
    'shared' (numba, 3 bytes per survivor), 'csr' (scipy fp32) or 'auto' (shared when numba is
    installed). ``break_even``: override the per-kind densities (e.g. ``{"conv": 0.0}`` keeps every
    convolution dense, ``{"linear": 1.1}`` makes every Linear sparse). ``model.sparse_plan`` says
    which layers run sparse.
    """
    if torch.device(map_location).type != "cpu":
        return fileformat.load_compressed(path, map_location, quantized=False, model=model)
    kernel = resolve_kernel(kernel)
    with open(path, "rb") as f:
        parsed = fileformat.parse(f.read())
    net = fileformat.skeleton(parsed.header, model)
    fileformat._check_fits(parsed, net.state_dict(), net)
    found = models.compressible_layers(net)
    plan = {name: choose_layout(found[name], s.positions.size / max(math.prod(s.shape), 1), break_even)
            for name, s in parsed.layers.items()}
    values = dict(parsed.tensors)
    values.update({f"{n}.weight": parsed.layers[n].dense() for n, how in plan.items() if how == "dense"})
    missing, unexpected = net.load_state_dict(values, assign=True, strict=False)
    assert not unexpected and set(missing) == {f"{n}.weight" for n, how in plan.items() if how == "sparse"}
    for name, how in plan.items():
        if how == "sparse":
            matrix = SharedCSR.from_layer(parsed.layers.pop(name))
            old = found[name]
            new = SparseLinear(matrix, old.bias, kernel) if isinstance(old, nn.Linear) else \
                SparseConv2d(old, matrix, kernel)
            net.set_submodule(name, new)
    net.metadata, net.sparse_plan = parsed.header["metadata"], plan
    del parsed, values
    if any(t.is_meta for t in [*net.parameters(), *net.buffers()]):
        raise fileformat.CompressedFileError("the file leaves some of the model's tensors unset")
    return net.eval().requires_grad_(False)


def warm_up() -> None:
    """Compile (or load from numba's cache) the shared-weight kernels for the layouts loads build."""
    if resolve_kernel("auto") != "shared":
        return
    from .sparse_kernels import shared_matmul

    for col_type in (np.uint16, np.int32):
        for idx_type in (np.uint8, np.uint16):
            args = np.array([0, 1], np.int32), np.zeros(1, col_type), np.zeros(1, idx_type), np.ones(1, np.float32)
            shared_matmul(*args, np.ones(1, np.float32))
            shared_matmul(*args, np.ones((1, 2), np.float32))


def weight_bytes(module: nn.Module) -> int:
    """Resident bytes of a module's weights: parameters, buffers and sparse layers' survivors."""
    dense = sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
    return dense + sum(m.sparse_nbytes for m in module.modules() if isinstance(m, _SparseBase))
