"""helpers.quantize.bit_allocation: the greedy per-layer widths, against an evaluator with known answers."""

import math

import pytest
import torch
from torch import nn

from helpers import models
from helpers.quantize import bit_allocation, quantization


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():  # different survivor counts: 2048, 512 and 64 weights
        net[0].weight[:, :8] = 0  # 1,792 survivors
    return net


def _widths(model):
    """Each layer's width as the clustering left it: log2 of its codebook's size."""
    return {name: int(math.log2(q.codebook.numel())) for name, q in quantization.export_quantized(model).items()}


def _evaluator(needed, calls=None):
    """Accuracy 0.9 minus 1 point per bit any layer is below what it needs (a known answer)."""
    def evaluate(model):
        widths = _widths(model)
        if calls is not None:
            calls.append(widths)
        return 0.9 - 0.01 * sum(max(0, needed[n] - widths[n]) for n in needed)
    return evaluate


def test_each_layer_narrows_to_what_it_needs_and_no_further():
    net = _net()
    needed = {"0": 3, "2": 4, "4": 6}
    start = bit_allocation.default_bits(net, conv_bits=8, fc_bits=5)
    assert start == {"0": 5, "2": 5, "4": 5}
    bits, trials = bit_allocation.allocate_bits(net, _evaluator(needed), start, tolerance=0.005, min_bits=2)
    assert bits == {"0": 3, "2": 4, "4": 5}, "layer 4 needs 6 bits: it stays at the start's 5"
    assert trials[0]["layer"] is None and trials[0]["accuracy"] == pytest.approx(0.89)
    tried = [t["layer"] for t in trials[1:]]
    assert tried == ["0", "0", "0", "2", "2", "4"], "largest layer first, each until a trial fails"
    assert [t["kept"] for t in trials[1:]] == [True, True, False, True, False, False]
    assert not any(isinstance(m, quantization.SharedWeight) for m in net.modules()), "the model is untouched"


def test_a_looser_tolerance_trades_accuracy_for_bits_and_min_bits_is_a_floor():
    net = _net()
    needed = {"0": 4, "2": 4, "4": 4}
    start = {"0": 5, "2": 5, "4": 5}
    bits, _ = bit_allocation.allocate_bits(net, _evaluator(needed), start, tolerance=0.015, min_bits=3)
    assert bits == {"0": 3, "2": 4, "4": 4}, "layer 0 spends one point of the 1.5 allowed; a second is too many"
    bits, trials = bit_allocation.allocate_bits(net, _evaluator({"0": 1, "2": 1, "4": 1}), start, 0.0, min_bits=3)
    assert bits == {"0": 3, "2": 3, "4": 3} and len(trials) == 1 + 6


def test_the_loss_rule_stops_what_accuracy_alone_would_pass():
    """Accuracy never moves; the loss grows 2 % for every bit any layer is below 4. A 3 % loss
    tolerance allows one such bit in all: the largest layer's, tried first."""
    net = _net()

    def evaluate(model):
        short = sum(max(0, 4 - b) for b in _widths(model).values())
        return {"top1": 0.9, "loss": 1.0 * (1 + 0.02 * short)}

    start = {"0": 5, "2": 5, "4": 5}
    bits, trials = bit_allocation.allocate_bits(net, evaluate, start, tolerance=0.0, min_bits=2)
    assert bits == {"0": 2, "2": 2, "4": 2}, "without a loss tolerance only accuracy counts"
    bits, trials = bit_allocation.allocate_bits(net, evaluate, start, tolerance=0.0, min_bits=2, loss_tolerance=0.03)
    assert bits == {"0": 3, "2": 4, "4": 4}, "layer 0 spends 2 % of the 3 % allowed; any further bit is 4 %"
    assert trials[0]["loss"] == pytest.approx(1.0) and all("loss" in t for t in trials)
    with pytest.raises(ValueError, match="loss_tolerance needs"):
        bit_allocation.allocate_bits(net, lambda m: 0.9, start, 0.0, loss_tolerance=0.03)
    with pytest.raises(ValueError, match="loss_tolerance must"):
        bit_allocation.allocate_bits(net, evaluate, start, 0.0, loss_tolerance=-1)


def test_bits_saved_and_bad_input():
    assert bit_allocation.bits_saved({"a": 5, "b": 8}, {"a": 3, "b": 8}, {"a": 100, "b": 7}) == 200
    net = _net()
    with pytest.raises(ValueError, match="tolerance"):
        bit_allocation.allocate_bits(net, _evaluator({}), {"0": 5}, tolerance=1.5)
    with pytest.raises(ValueError, match="min_bits"):
        bit_allocation.allocate_bits(net, _evaluator({}), {"0": 5}, tolerance=0.0, min_bits=0)


def _separable_net():
    """A stem conv, a depthwise conv (groups == channels), a grouped conv that is not depthwise, a 1x1 conv, fc."""
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 3, groups=2),
                         nn.Conv2d(8, 16, 1), nn.Flatten(), nn.LazyLinear(4))


def test_depthwise_convolutions_get_their_own_width_when_given():
    net = _separable_net()
    net(torch.randn(1, 3, 9, 9))  # materialize the lazy fc
    assert [models.is_depthwise(layer) for layer in net] == [False, True, False, False, False, False]
    assert bit_allocation.default_bits(net, 6, 5) == {"0": 6, "1": 6, "2": 6, "3": 6, "5": 5}
    assert bit_allocation.default_bits(net, 6, 5, depthwise_bits=8) == {"0": 6, "1": 8, "2": 6, "3": 6, "5": 5}


def test_the_quantize_stage_takes_depthwise_bits_from_the_settings():
    from helpers.pipeline import stages

    net = _separable_net()
    net(torch.randn(1, 3, 9, 9))
    settings = {"conv_bits": 6, "fc_bits": 5, "depthwise_bits": 8, "bit_allocation": "fixed"}
    bits, trials = stages._allocate_bits(net, None, settings, torch.device("cpu"))
    assert bits["1"] == 8 and bits["3"] == 6 and trials == []
    settings["depthwise_bits"] = None  # the default: depthwise layers at conv_bits
    assert stages._allocate_bits(net, None, settings, torch.device("cpu"))[0]["1"] == 6
