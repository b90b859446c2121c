"""helpers.quantize.compact: int8-grid biases and float16 codebooks, kept only when validation allows."""

import numpy as np
import pytest
import torch
from torch import nn

from helpers.quantize import compact, quantization
from helpers.coding import fileformat
from helpers import models
from helpers.prune import pruning


@pytest.mark.parametrize("values", [[0.3, -1.7, 0.01, 5.0], [1e-30, -3e-31], [0.0, 0.0], [127.0, 0.5], [1e20, 3.0]])
def test_the_int8_grid_is_what_the_file_format_stores_exactly(values):
    rounded = compact.round_to_int8_grid(torch.tensor(values))
    exponent = fileformat.int8_exponent(rounded.numpy())
    assert exponent is not None
    step = 2.0 ** exponent
    assert torch.all((rounded - torch.tensor(values)).abs() <= step / 2 * (1 + 1e-6))
    assert np.abs(rounded.numpy() / step).max() <= 127


def _quantized_lenet():
    torch.manual_seed(0)
    net = models.create("lenet300", 10, 1, 28)
    pruning.prune_to_sparsity(net, {n: 0.9 for n in models.compressible_layers(net)})
    pruning.remove_masks(net)
    quantization.quantize_model(net, conv_bits=8, fc_bits=5)
    return net


def test_compact_keeps_a_rounding_only_when_accuracy_does_not_drop():
    net = _quantized_lenet()
    exact_bias = net.classifier[1].bias.detach().clone()
    exact_codebook = net.classifier[1].parametrizations.weight.original.detach().clone()
    scores = iter([0.9, 0.9, 0.8])  # codebooks: before, after (kept, so also the biases' before); biases: after
    record = compact.compact(net, lambda m: next(scores))
    assert record["codebooks"]["kept"] and not record["biases"]["kept"]
    assert torch.equal(net.classifier[1].bias, exact_bias), "a rounding that lost accuracy is undone"
    codebook = net.classifier[1].parametrizations.weight.original.detach()
    assert torch.equal(codebook, exact_codebook.half().float()) and not torch.equal(codebook, exact_codebook)
    assert record["biases"]["values"] == 300 + 100 + 10


def test_a_compacted_model_writes_a_smaller_file_with_the_same_weights(tmp_path):
    net = _quantized_lenet()
    x = torch.randn(4, 1, 28, 28)
    before = fileformat.save_model(net, tmp_path / "exact.dcz")
    compact.compact(net, lambda m: 1.0)
    after = fileformat.save_model(net, tmp_path / "compact.dcz")
    assert before - after >= 1000, "410 biases at 1 byte instead of 4 (3 B each), less the header keys saying so"
    loaded = fileformat.load_compressed(tmp_path / "compact.dcz")
    net.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x)), "the file holds exactly the rounded model"
    assert all(isinstance(layer, nn.Linear) for layer in models.compressible_layers(loaded).values())


def _quantized_bn_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4), nn.LayerNorm(4))
    net.train()
    with torch.no_grad():
        for norm in (net[1], net[4], net[9]):  # trained-looking affine parameters, not 1 and 0
            norm.weight.normal_(1.0, 0.2), norm.bias.normal_(0.0, 0.2)
        for _ in range(3):  # running statistics that are not 0 and 1
            net(torch.randn(8, 3, 12, 12) * 3 + 1)
    net.eval()
    quantization.quantize_model(net, conv_bits=4, fc_bits=4)
    return net


def test_norms_rounds_every_normalization_tensor_to_float16_and_undoes_it_when_accuracy_drops():
    net = _quantized_bn_net()
    exact = {k: v.clone() for k, v in net.state_dict().items() if k.startswith(("1.", "4.", "9."))}
    record = compact.compact(net, lambda m: 0.5, kinds=("norms",))
    assert record["norms"]["kept"] and record["norms"]["values"] == 4 * 8 + 4 * 16 + 2 * 4
    state = net.state_dict()
    for key, value in exact.items():
        if value.is_floating_point():  # weight, bias, running_mean, running_var
            assert torch.equal(state[key], value.half().float()), key
        else:
            assert torch.equal(state[key], value), "num_batches_tracked is not a float"
    assert any(not torch.equal(state[k], v) for k, v in exact.items()), "the statistics were not float16 values"
    again = _quantized_bn_net()
    scores = iter([0.5, 0.4])
    assert not compact.compact(again, lambda m: next(scores), kinds=("norms",))["norms"]["kept"]
    assert all(torch.equal(again.state_dict()[k], v) for k, v in exact.items()), "a loss undoes the rounding"


def test_a_model_without_normalization_layers_skips_the_norms_trial():
    calls = []
    record = compact.compact(_quantized_lenet(), lambda m: calls.append(1) or 1.0, kinds=("norms",))
    assert record == {} and calls == []


def test_rounded_normalization_tensors_halve_their_bytes_in_the_file_and_load_back_exactly(tmp_path):
    net = _quantized_bn_net()
    x = torch.randn(2, 3, 12, 12)
    before = fileformat.save_model(net, tmp_path / "exact.dcz")
    compact.compact(net, lambda m: 1.0, kinds=("norms",))
    after = fileformat.save_model(net, tmp_path / "norms.dcz")
    # the 16-channel BatchNorm's 4 tensors at 2 bytes a value instead of 4, less the header keys
    # saying so; tensors under 16 values stay float32 (the key would cost more than it saves)
    assert before - after >= 2 * 4 * 16 - 40
    loaded = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16),
                           nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4), nn.LayerNorm(4))
    loaded = fileformat.load_compressed(tmp_path / "norms.dcz", model=loaded).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x)), "the file holds exactly the rounded model"
