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
