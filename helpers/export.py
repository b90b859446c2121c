"""Standard exports of a compressed file, for deployment where this package is not installed.

    python -m helpers.export model.dcz --format onnx|torchscript|safetensors --out PATH

or ``export(path, format, out)``. Each is written from the decoded dense fp32 model (pruning masks
and shared codebooks already folded into plain weights; nothing of this package is needed to run
it): ONNX (any runtime; the batch dimension is dynamic), TorchScript (``torch.jit.load``), or
safetensors (the ``state_dict`` alone, with the registry's ``create_args`` and the file's metadata
as JSON strings in its header, for ``helpers.models.create(**create_args)``).

None of them keeps the sparsity or the weight sharing: each stores every weight as fp32, so an
export is as large as the dense model (AlexNet-23: ~228 MB against a few MB of ``.dcz``); a
general-purpose compressor gets little back from random-looking codebook values. Speed: ONNX
Runtime and TorchScript run the dense model at dense speed; only ``helpers.sparse`` keeps both the
small memory and the sparse speed, and it reads the ``.dcz`` itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import warnings
from pathlib import Path

import torch

from . import fileformat
from .io import atomic_write_bytes

FORMATS = {"onnx": ("onnx",), "torchscript": (), "safetensors": ("safetensors",)}


def _require(fmt: str) -> None:
    missing = [m for m in FORMATS[fmt] if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"--format {fmt} needs {', '.join(missing)}: pip install {' '.join(missing)}")


def example_input(model, image_size=None, batch: int = 1) -> torch.Tensor:
    """A random input of the model's shape, from its create_args (or ``image_size`` for your own)."""
    args = getattr(model, "create_args", None) or {}
    size = image_size or args.get("image_size") or (model.metadata or {}).get("image_size")
    if not size:
        raise ValueError("the file does not record its image size: pass image_size=")
    return torch.randn(batch, args.get("in_channels", 3), size, size)


def to_bytes(model, fmt: str, x: torch.Tensor, metadata: dict | None = None) -> bytes:
    """The export of a plain (non-parametrized) module in ``fmt``, as bytes."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
    _require(fmt)
    model = model.eval()
    if fmt == "safetensors":
        from safetensors.torch import save

        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        return save(state, metadata={k: json.dumps(v) for k, v in (metadata or {}).items()})
    buf = io.BytesIO()
    with torch.no_grad():
        if fmt == "torchscript":
            with warnings.catch_warnings():  # torch.jit is deprecated for torch.export, but libtorch
                warnings.simplefilter("ignore", FutureWarning)  # (C++) and mobile still load it
                torch.jit.save(torch.jit.trace(model, x), buf)
        else:
            torch.onnx.export(model, (x,), buf, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return buf.getvalue()


def export(path, fmt: str, out, *, model=None, image_size=None) -> Path:
    """Write the compressed file at ``path`` as ``fmt`` to ``out`` (atomically); returns ``out``.

    ``model``: a fresh instance, for a file of your own class (see ``helpers.load_compressed``).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
    _require(fmt)  # before decoding anything
    net = fileformat.load_compressed(path, quantized=False, model=model).eval()
    meta = {"create_args": getattr(net, "create_args", None), "metadata": net.metadata}
    data = to_bytes(net, fmt, example_input(net, image_size), meta)
    atomic_write_bytes(out, data)
    return Path(out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m helpers.export", description=__doc__.splitlines()[0])
    parser.add_argument("file", help="a compressed model file (.dcz)")
    parser.add_argument("--format", required=True, choices=list(FORMATS))
    parser.add_argument("--out", required=True)
    parser.add_argument("--image-size", type=int, default=None, help="input size, if the file lacks it")
    args = parser.parse_args(argv)
    out = export(args.file, args.format, args.out, image_size=args.image_size)
    print(f"{out}: {out.stat().st_size} bytes ({args.format})")


if __name__ == "__main__":
    main()
