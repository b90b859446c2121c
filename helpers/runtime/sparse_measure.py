"""Measuring the sparse runtime against the dense and int8 loads of the same file (notebook 06,
``benchmarks/bench_runtime.py``): latency of the whole network and of its fully connected layers
alone (the paper's Fig. 9 measure), resident weight bytes, and the memory a fresh process gains by
loading the file each way.

Latencies are medians of repeated forwards with the three forms timed in turn, round after round,
so that a machine shared with other jobs slows all three alike and their ratios hold; each round of a
form starts with one untimed forward of it, so no form is timed in the cache state another left.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import time

import numpy as np
import torch
from torch import nn

from ..coding import fileformat
from .. import models

# Kept fraction of each prunable layer, in order (Han et al. 2016, Table 4 and Table 5)
PAPER_DENSITY = {
    "alexnet": [0.84, 0.38, 0.35, 0.37, 0.37, 0.09, 0.09, 0.25],
    "vgg16": [0.58, 0.22, 0.34, 0.36, 0.53, 0.24, 0.42, 0.32, 0.27, 0.34, 0.35, 0.29, 0.36, 0.04, 0.04, 0.23],
}


def random_compressed_file(path, name: str, image_size: int, densities=None, *, num_classes: int = 23,
                           in_channels: int = 3, conv_bits: int = 8, fc_bits: int = 5, seed: int = 0) -> int:
    """Write a ``.dcz`` of a registry model with random survivors, codebooks and other tensors.

    ``densities``: a list (one per prunable layer, in order), a float for all, or None for the
    paper's (``PAPER_DENSITY``). Never builds a dense float weight; returns the file size.
    """
    from ..quantize.quantization import QuantizedLayer

    rng = np.random.default_rng(seed)
    with torch.device("meta"):
        model = models.create(name, num_classes, in_channels, image_size)
    found = models.compressible_layers(model)
    densities = PAPER_DENSITY[name] if densities is None else densities
    if not isinstance(densities, (list, tuple)):
        densities = [float(densities)] * len(found)
    if len(densities) != len(found):
        raise ValueError(f"{name} has {len(found)} prunable layers, got {len(densities)} densities")
    layers = {}
    for (key, m), density in zip(found.items(), densities):
        shape, numel = tuple(m.weight.shape), m.weight.numel()
        bits = conv_bits if len(shape) == 4 else fc_bits
        idx = np.zeros(numel, dtype=np.uint8 if bits <= 8 else np.int32)
        mask = rng.random(numel, dtype=np.float32) < density  # each weight kept with p = density
        idx[mask] = rng.integers(0, 2 ** bits, int(np.count_nonzero(mask)))
        codebook = (rng.standard_normal(2 ** bits) / math.sqrt(max(1.0, density * numel / shape[0])))
        layers[key] = QuantizedLayer(torch.from_numpy(codebook.astype(np.float32)), torch.from_numpy(idx).view(shape),
                                     torch.from_numpy(mask).view(shape), bits)
    weights = {f"{k}.weight" for k in found}
    others = {}
    for key, t in model.state_dict().items():
        if key in weights:
            continue
        if t.dtype == torch.int64:  # BatchNorm's num_batches_tracked
            others[key] = torch.zeros(t.shape, dtype=torch.int64)
        elif key.endswith("running_var"):
            others[key] = torch.from_numpy(rng.uniform(0.5, 1.5, t.shape).astype(np.float32))
        else:
            others[key] = torch.from_numpy(0.1 * rng.standard_normal(t.shape).astype(np.float32))
    return fileformat.save_compressed(path, model.create_args, layers, others, {"image_size": image_size})


def fc_inputs(model: nn.Module, x: torch.Tensor) -> dict:
    """The input each Linear layer (by name) sees in one forward of ``x``."""
    seen, hooks = {}, []
    for name, m in model.named_modules():
        if "Linear" in type(m).__name__:  # nn.Linear, SparseLinear, int8's dynamic quantized Linear
            hooks.append(m.register_forward_pre_hook(lambda mod, args, name=name: seen.setdefault(name, args[0])))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _runner(model, x: torch.Tensor, part: str):
    """A no-argument function running the whole model ('all') or its Linear layers alone ('fc')."""
    if part == "all":
        return lambda: model(x)
    feeds = fc_inputs(model, x)
    mods = dict(model.named_modules())
    return lambda: [mods[n](t) for n, t in feeds.items()]


def latencies_ms(forms: dict, x: torch.Tensor, part: str = "all", rounds: int = 15, repeats: int = 3) -> dict:
    """(median, best) ms per forward of each model in ``forms`` (label -> module), timed in turn, round
    by round (``repeats`` forwards per round).

    Each round's timed forwards follow one untimed forward of the same model: the steady state of a
    process serving that model, with its own weights in the caches as far as they fit, not the
    previous form's. Without it the order of the forms decided the result: AlexNet's fc layers as
    int8 (55 MB) took 0.91 ms after the sparse form (12 MB; ``bench_runtime.py --only alexnet-64``)
    and 1.48 ms after the dense one (228 MB; a throwaway script timing them in that order)."""
    runs = {k: _runner(m, x, part) for k, m in forms.items()}
    times = {k: [] for k in forms}
    with torch.inference_mode():
        for run in runs.values():  # warm-up: JIT compilation, allocator, caches
            run()
            run()
        for _ in range(rounds):
            for k, run in runs.items():
                run()
                t0 = time.perf_counter()
                for _ in range(repeats):
                    run()
                times[k].append((time.perf_counter() - t0) / repeats * 1e3)
    return {k: (float(np.median(v)), float(np.min(v))) for k, v in times.items()}


_RSS_SCRIPT = r"""
import ctypes, json, sys, torch, torchvision, helpers, helpers.coding.fileformat, helpers.runtime.sparse
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
path, runtime = sys.argv[1], sys.argv[2]
if runtime == "sparse":
    helpers.runtime.sparse.warm_up()  # the kernel's code (numba, LLVM) is the runtime's, not the weights'
trim = getattr(ctypes.CDLL(None), "malloc_trim", lambda pad: 0)  # glibc: return freed heap pages
trim(0)
code = rss()
model = helpers.load_compressed(path, runtime=runtime)
trim(0)
print(json.dumps({"gained": rss() - code, "base": code}))
"""


def load_rss(path, runtime: str) -> dict:
    """Bytes of RSS a fresh process gains by loading ``path`` (after importing torch, torchvision and
    helpers and, for 'sparse', compiling the kernel) and its RSS before loading ('base'). Freed heap
    is handed back (glibc ``malloc_trim``) before both readings, so neither counts allocator slack."""
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(path), runtime], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


class OnnxRuntimeModel:
    """The dense fp32 export of a model run by onnxruntime with torch's thread count, called like the
    module (tensor in, tensor out): what a user would deploy instead of this package's runtime."""

    def __init__(self, model: nn.Module, x: torch.Tensor):
        import onnxruntime

        from ..export import onnx_bytes

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
        self.session = onnxruntime.InferenceSession(onnx_bytes(model, x), options,
                                                    providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"input": x.numpy()})[0])


def onnxruntime_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime", "onnxscript"))


@contextlib.contextmanager
def busy_processes(count: int, limit_s: float = 3600.0):
    """``count`` processes that each keep one core busy (a plain Python loop) until the block ends,
    or ``limit_s`` at the latest: the benchmark's "another process on the machine"."""
    loop = f"import time\nend = time.time() + {limit_s}\nwhile time.time() < end:\n    pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(count)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def compare(path, batches=(1,), parts=("all", "fc"), *, int8: bool = True, rss: bool = True,
            rounds: int = 15, ort: bool = False) -> list[dict]:
    """Rows of dense fp32 vs int8 vs sparse (vs onnxruntime on the dense export, whole network only,
    with ``ort``) for the file at ``path`` (the benchmark's keys)."""
    from ..quantize import int8 as int8_mod
    from . import sparse

    dense = fileformat.load_compressed(path, quantized=False).eval()
    forms = {"dense": dense, "sparse": sparse.load_sparse(path)}
    plan = forms["sparse"].sparse_plan
    if int8:
        forms["int8"] = int8_mod.int8_model(dense)
    args = dense.create_args
    memory = {"dense_weight_bytes": sparse.weight_bytes(dense), "sparse_weight_bytes": sparse.weight_bytes(forms["sparse"])}
    if rss:
        memory.update(dense_load_rss=load_rss(path, "dense")["gained"], sparse_load_rss=load_rss(path, "sparse")["gained"])
    rows = []
    shape = (args["in_channels"], args["image_size"], args["image_size"])
    if ort:
        forms["ort"] = OnnxRuntimeModel(dense, torch.randn(2, *shape))
    for batch in batches:
        x = torch.randn(batch, *shape)
        for part in parts:
            timed = {k: m for k, m in forms.items() if part == "all" or k != "ort"}  # ort: no per-layer runs
            ms = latencies_ms(timed, x, part, rounds)
            rows.append({"model": args["name"], "part": part, "image_size": args["image_size"], "batch": batch,
                         **{f"{k}_ms": ms[k][0] if k in ms else None for k in ("dense", "int8", "sparse", "ort")},
                         **memory, **{f"{k}_best_ms": ms[k][1] if k in ms else None for k in ("dense", "int8", "sparse")},
                         "sparse_layers": sum(v == "sparse" for v in plan.values()),
                         "indexed_layers": sum(v == "indexed" for v in plan.values())})
    return rows


def plot_comparison(rows: list[dict], title: str = ""):
    """Two panels: latency (ms) of each form per (part, batch); weight and load memory (MB)."""
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 3.8))
    labels = [f"{r['part']}, batch {r['batch']}" for r in rows]
    xs = np.arange(len(rows))
    for i, (key, name) in enumerate([("dense_ms", "dense fp32"), ("int8_ms", "int8"), ("sparse_ms", "sparse")]):
        ax_t.bar(xs + (i - 1) * 0.27, [r.get(key) or 0 for r in rows], 0.27, label=name)
    ax_t.set_xticks(xs, labels)
    ax_t.set_ylabel("ms per forward (median)")
    ax_t.set_yscale("log")
    ax_t.legend()
    r = rows[0]
    mem = [("weights", "dense_weight_bytes", "sparse_weight_bytes"), ("load (RSS)", "dense_load_rss", "sparse_load_rss")]
    mem = [m for m in mem if r.get(m[1]) is not None]
    mx = np.arange(len(mem))
    ax_m.bar(mx - 0.2, [r[d] / 1e6 for _, d, _ in mem], 0.4, label="dense fp32")
    ax_m.bar(mx + 0.2, [r[s] / 1e6 for _, _, s in mem], 0.4, label="sparse")
    ax_m.set_xticks(mx, [m[0] for m in mem])
    ax_m.set_ylabel("MB")
    ax_m.legend()
    fig.suptitle(title or f"{r['model']} at {r['image_size']} px: dense vs int8 vs sparse runtime")
    fig.tight_layout()
    return fig


def _random_layer(shape, density, bits, rng) -> fileformat.SparseLayer:
    positions = np.flatnonzero(rng.random(math.prod(shape), dtype=np.float32) < density).astype(np.int64)
    return fileformat.SparseLayer(tuple(shape), bits, rng.standard_normal(2 ** bits).astype(np.float32),
                                  positions, rng.integers(0, 2 ** bits, positions.size))


# the layers whose crossing sets ``helpers.runtime.sparse.BREAK_EVEN``: (layer, input per image, bits)
CALIBRATION_LAYERS = {
    "linear": (lambda: nn.Linear(9216, 4096), (9216,), 5),                        # AlexNet's fc6
    "conv": (lambda: nn.Conv2d(128, 128, 3, padding=1), (128, 28, 28), 8),        # ResNet-18's layer2 at 224 px
    "conv1x1": (lambda: nn.Conv2d(112, 672, 1), (112, 14, 14), 8),                # an expansion of EfficientNet-Lite0
}


def calibrate(densities=(0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8), rounds: int = 10, seed: int = 0,
              batches=(1, 32), kinds=tuple(CALIBRATION_LAYERS)) -> dict:
    """Best-of-``rounds`` ms of dense vs sparse at each density for each kind's layer in
    ``CALIBRATION_LAYERS``, at each batch size, and the density where they cross (None: no crossing
    in ``densities``). Keys ``linear_b1``, ``conv_b32``, ...: ``helpers.runtime.sparse.BREAK_EVEN``."""
    from .sparse import SharedCSR, SparseConv2d, SparseLinear, resolve_kernel

    rng, kernel, out = np.random.default_rng(seed), resolve_kernel("auto"), {}
    for kind in kinds:
        make, shape, bits = CALIBRATION_LAYERS[kind]
        dense = make().eval().requires_grad_(False)
        for batch in batches:
            x = torch.randn(batch, *shape)
            rows = []
            for density in densities:
                layer = _random_layer(dense.weight.shape, density, bits, rng)
                dense.weight.data = layer.dense()
                if kind == "linear":
                    matrix = SharedCSR.from_layer(layer)
                    sparse = SparseLinear(matrix, dense.bias, kernel)
                else:
                    matrix = SharedCSR.from_layer(layer, group=1)
                    sparse = SparseConv2d(dense, matrix, kernel)
                ms = latencies_ms({"dense": dense, "sparse": sparse}, x, "all", rounds)
                rows.append({"density": density, "dense_ms": ms["dense"][1], "sparse_ms": ms["sparse"][1],
                             "group": matrix.group})
            out[f"{kind}_b{batch}"] = {"rows": rows, "break_even": _crossing(densities, rows)}
    return out


def _crossing(densities, rows):
    """The density where sparse_ms / dense_ms crosses 1, interpolated; 0 when sparse is never faster."""
    ratio = [r["sparse_ms"] / r["dense_ms"] for r in rows]
    if ratio[0] > 1:
        return 0.0
    return next((densities[i] + (1 - ratio[i]) * (densities[i + 1] - densities[i]) / (ratio[i + 1] - ratio[i])
                 for i in range(len(rows) - 1) if ratio[i] <= 1 < ratio[i + 1]), None)


def int8_backends(rounds: int = 10) -> dict:
    """Median and best ms of AlexNet's three fc layers (9216-4096-4096-23) at batch 1: dense fp32,
    int8 through torch.ao and through torchao (``helpers.quantize.int8``)."""
    from ..quantize import int8

    fc = nn.Sequential(nn.Linear(9216, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                       nn.Linear(4096, 23)).eval()
    forms = {"dense": fc, "ao": int8.int8_model(fc, "ao"), "torchao": int8.int8_model(fc, "torchao")}
    ms = latencies_ms(forms, torch.randn(1, 9216), "all", rounds)
    return {k: {"median_ms": v[0], "best_ms": v[1]} for k, v in ms.items()}
