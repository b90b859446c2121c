"""The int8 baseline (helpers.quantize.int8): outputs near the fp32 model, 1 byte per weight, the re-exports
notebook 05 uses, the torchao backend and bad input."""

import sys

import pytest
import torch
import torch.nn.functional as F

from helpers.quantize import int8
from helpers import models


def small_model():
    torch.manual_seed(0)
    return models.create("lenet5", 10, 1, 28).eval()


@pytest.mark.parametrize("backend", ["ao", "torchao"])
def test_outputs_close_to_fp32(backend):
    if backend == "torchao":
        pytest.importorskip("torchao")
    model = small_model()
    q = int8.int8_model(model, backend)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        ref, got = model(x), q(x)
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()
    assert any(isinstance(m, int8.Int8Conv2d) for m in q.modules())
    assert any(isinstance(m, torch.nn.Conv2d) for m in model.modules())  # the original is untouched


def test_int8_conv_stores_one_byte_per_weight_and_rounds_per_channel():
    conv = torch.nn.Conv2d(2, 3, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(24.0).view(3, 2, 2, 2) - 12)
    q = int8.Int8Conv2d(conv)
    assert q.weight_int8.dtype == torch.int8 and q.weight_int8.abs().amax(dim=(1, 2, 3)).tolist() == [127] * 3
    scale = torch.tensor([12.0, 4.0, 11.0]) / 127  # the largest |weight| of each output channel
    torch.testing.assert_close(q.scale, scale)
    expected_int8 = torch.round(conv.weight.detach() / scale.view(-1, 1, 1, 1)).to(torch.int8)
    assert torch.equal(q.weight_int8, expected_int8)
    x = torch.randn(1, 2, 5, 5)
    torch.testing.assert_close(q(x), F.conv2d(x, expected_int8.float() * scale.view(-1, 1, 1, 1)))


def test_size_is_about_one_byte_per_weight():
    model = small_model()
    weights = sum(m.weight.numel() for m in models.compressible_layers(model).values())
    assert weights < int8.int8_size_bytes(model) < 1.2 * weights + 20000


def test_bad_backend_and_missing_torchao(monkeypatch):
    with pytest.raises(ValueError, match="backend="):
        int8.int8_model(small_model(), "tensorrt")
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    with pytest.raises(ImportError, match="pip install torchao"):
        int8.int8_model(small_model(), "torchao")
