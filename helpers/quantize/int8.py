"""The int8 baseline of the original project: post-training int8 of the dense model (1 byte per
weight, no pruning savings), the comparison row of notebooks 05 and 07 and of the runtime benchmark.

Linear layers: which maintained API. ``torch.ao.quantization`` is deprecated in favour of torchao,
so both are here (``backend=``), and the default is chosen by measurement: on this CPU (2 cores,
AVX2, no AMX/VNNI) torchao 0.18's ``Int8DynamicActivationInt8WeightConfig`` runs AlexNet's three fc
layers at batch 1 in ~220 ms against ~50 ms for ``torch.ao``'s ``quantize_dynamic`` (fbgemm's int8
GEMM) and ~43 ms dense fp32; its weight-only config takes ~570 ms (torchao's CPU int8 paths target
``torch.compile`` and Intel AMX; eager they dequantize per call). A baseline 4x slower than dense
would misstate what int8 costs, so ``backend="ao"`` (``torch.ao``, warnings muted) stays the
default until torchao is measured faster here: ``python benchmarks/bench_runtime.py
--int8-backends`` times both side by side.

Conv2d layers: ``Int8Conv2d``, weight-only per-output-channel int8 (neither API has a dynamic int8
convolution; static quantization needs calibration data and QuantStubs in each model's forward).
"""

from __future__ import annotations

import copy
import io
import warnings

import torch
from torch import nn
from torch.nn import functional as F

BACKENDS = ("ao", "torchao")


class Int8Conv2d(nn.Module):
    """Weight-only int8 Conv2d: symmetric per-output-channel int8 weights, dequantized per forward."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if conv.padding_mode != "zeros":
            raise NotImplementedError("Int8Conv2d supports padding_mode='zeros' only.")
        w = conv.weight.detach().float()
        scale = w.abs().amax(dim=(1, 2, 3)).clamp_min(1e-12) / 127
        self.register_buffer("weight_int8", torch.round(w / scale.view(-1, 1, 1, 1)).clamp(-127, 127)
                             .to(torch.int8))
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().float().clone())
        self.stride, self.padding, self.dilation, self.groups = (conv.stride, conv.padding,
                                                                 conv.dilation, conv.groups)

    def forward(self, x):
        w = self.weight_int8.float() * self.scale.view(-1, 1, 1, 1)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def int8_model(model: nn.Module, backend: str = "ao") -> nn.Module:
    """A CPU copy of ``model`` with int8 weights, 1 byte per weight, evaluable by a plain forward.

    Linear: dynamic int8 (per-channel int8 weights, activations quantized on the fly) through
    ``backend`` ('ao': ``torch.ao.quantization.quantize_dynamic``; 'torchao': torchao's
    ``quantize_``; see the module docstring). Conv2d: ``Int8Conv2d``. Parametrized weights (pruning
    masks, shared codebooks) are baked in; ``model`` is left untouched. Every weight, zero or not,
    is stored: the dense int8 reference (AlexNet-23: ~57.1 MB).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: use one of {', '.join(BACKENDS)}")
    if backend == "torchao":
        try:
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
        except ImportError:
            raise ImportError("backend='torchao' needs torchao: pip install torchao") from None
    from .quantization import _bake_weight

    m = copy.deepcopy(model).cpu().eval()
    for parent in list(m.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(parent, child_name, Int8Conv2d(child))
            elif isinstance(child, nn.Linear):  # a plain Linear: the quantizers need no parametrization
                _bake_weight(child)
    if backend == "torchao":
        quantize_(m, Int8DynamicActivationInt8WeightConfig())
        return m
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated: see the module docstring
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(m, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def int8_size_bytes(model: nn.Module) -> int:
    """Bytes of the int8 model's ``state_dict`` as ``torch.save`` writes it (int8 weights + fp32
    biases and scales + container overhead). ``model`` may be fp32 (converted first) or int8."""
    already = any(isinstance(m, Int8Conv2d) or type(m).__module__.startswith("torch.ao.nn.quantized")
                  for m in model.modules())
    q = model if already else int8_model(model)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(q.state_dict(), buffer)
    return buffer.getbuffer().nbytes
