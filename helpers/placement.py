"""Where and how a batch runs: autocast precision and the memory layout of image batches.

``precision``: "auto" (bf16 autocast on CUDA where supported, else fp16 with a gradient scaler;
fp32 elsewhere), "fp32", or "bf16" (bf16 autocast on any device, e.g. to run the ``gpu``
profile's code path on a CPU). "fp16" needs CUDA.

``set_channels_last(True)``: batches of images reach the model channels-last (NHWC). Weights,
gradients and checkpoints keep their usual layout; only the activations change, which lets oneDNN
pick its NHWC kernels. ``python benchmarks/bench_channels_last.py --threads 1`` (commit 0e77538,
one thread, the 2-core machine busy with two other one-thread jobs), one SGD step at the profiles'
batches: EfficientNet-Lite0 at 160 px 3.72 -> 2.29 s (1.62x), at 128 px 1.54x, MobileNetV3-small
at 64 px 1.73x, LeNet-5 1.40x, ResNet-18 1.10x, AlexNet and VGG16 1.00-1.02x; evaluating 128
images: Lite0 1.74-1.77x, LeNet-5 2.39x, the others 0.99-1.13x. No case was slower. Sums then run
in another order, so results differ in their last bits (like another thread count). It is a
process-wide setting, like ``torch.set_num_threads``, that the profiles choose (``channels_last``);
``helpers.training`` and the pruning's paired comparison move every batch with ``to_device``.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_CHANNELS_LAST = [False]  # set_channels_last's process-wide choice


def set_channels_last(enabled: bool) -> None:
    """Feed image batches to models channels-last from now on in this process (see the module docstring)."""
    if not isinstance(enabled, bool):
        raise ValueError(f"set_channels_last() takes True or False, got {enabled!r}.")
    _CHANNELS_LAST[0] = enabled


def channels_last_enabled() -> bool:
    return _CHANNELS_LAST[0]


def last_bit_conditions() -> dict:
    """What changes results in their last bits without changing what is computed: torch's thread
    count and the batch layout. Stage and round records keep it (recorded, not checked on resume)."""
    return {"threads": torch.get_num_threads(), "channels_last": _CHANNELS_LAST[0]}


def to_device(images: torch.Tensor, device) -> torch.Tensor:
    """``images`` on ``device``, channels-last when ``set_channels_last(True)`` and they are a 4-D batch."""
    if _CHANNELS_LAST[0] and images.dim() == 4 and images.is_floating_point():
        return images.to(device, non_blocking=True, memory_format=torch.channels_last)
    return images.to(device, non_blocking=True)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    return precision


def autocast_for(device: torch.device, precision: str = "auto"):
    """(autocast context, GradScaler or None) for ``precision`` on ``device``."""
    device = torch.device(device)
    if check_precision(precision) == "fp32" or (precision == "auto" and device.type != "cuda"):
        return nullcontext(), None
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA device (got {device}); use 'bf16' or 'fp32'.")
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return torch.autocast(device.type, dtype=dtype), scaler
