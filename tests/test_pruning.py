"""Tests for helpers.prune.pruning: exact masks on hand-made tensors, and masks that survive training."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from helpers import models
from helpers.prune import pruning, sensitivity


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These models are tiny: with several OpenMP threads on a shared CPU, spin-waiting costs more
    # than the arithmetic (measured 10x slower under load). Restored for other test modules.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def lenet5(seed=0):
    torch.manual_seed(seed)
    return models.create("lenet5", 10, in_channels=1, image_size=28)


def batch(seed=1, n=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def train(model, optimizer, steps, seed=1):
    x, y = batch(seed)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def effective_weights(model):
    return {n: layer.weight.detach().clone() for n, layer in models.compressible_layers(model).items()}


def assert_pruned_are_zero(model, masks):
    for name, layer in models.compressible_layers(model).items():
        if name in masks:
            assert torch.equal(layer.weight[~masks[name]], torch.zeros((~masks[name]).sum().item())), name


def assert_state_dicts_equal(a, b):
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------------------------------------
# Pure tensor rules, checked by hand
# ---------------------------------------------------------------------------------------------


def test_mask_from_threshold_keeps_strictly_larger_magnitudes():
    w = torch.tensor([[0.5, -0.2], [0.2, 0.0], [-1.0, 0.19]])
    expected = torch.tensor([[True, False], [False, False], [True, False]])
    assert torch.equal(pruning.mask_from_threshold(w, 0.2), expected)
    assert torch.equal(pruning.mask_from_threshold(w, 0.0), w != 0)


def test_quality_rule_uses_bessel_corrected_std():
    values = [1.0, -2.0, 0.5, 3.0, -0.25, 0.0]
    w = torch.tensor(values).reshape(2, 3)
    mean = sum(values) / 6
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 5)  # 1.7516...
    assert pruning.quality_threshold(w, 0.7) == pytest.approx(0.7 * std, rel=1e-6)
    # 0.7 * 1.7516 = 1.226: only |-2.0| and |3.0| survive.
    expected = torch.tensor([[False, True, False], [True, False, False]])
    assert torch.equal(pruning.mask_from_quality(w, 0.7), expected)
    assert torch.equal(pruning.mask_from_quality(w, 0.0), w != 0)


def test_mask_from_sparsity_exact_count_and_deterministic_ties():
    w = torch.tensor([0.5, -0.1, 0.1, 0.3, -0.1, 2.0])
    # Three magnitudes tie at 0.1; removing two takes the lowest flat indices (1 and 2).
    assert torch.equal(pruning.mask_from_sparsity(w, 2 / 6),
                       torch.tensor([True, False, False, True, True, True]))
    assert torch.equal(pruning.mask_from_sparsity(w, 0.5),
                       torch.tensor([True, False, False, True, False, True]))
    assert pruning.mask_from_sparsity(w, 0.0).all()
    assert not pruning.mask_from_sparsity(w, 1.0).any()
    # round(0.5 * 5) = 2.5 rounds half up to 3 removed.
    assert pruning.mask_from_sparsity(torch.arange(1.0, 6.0), 0.5).sum() == 2
    big = torch.randn(37, 53, generator=torch.Generator().manual_seed(0))
    for s in (0.1, 0.333, 0.9, 0.99):
        assert (~pruning.mask_from_sparsity(big, s)).sum() == round(s * big.numel())
    assert pruning.mask_from_sparsity(big.reshape(37, 53, 1, 1), 0.5).shape == (37, 53, 1, 1)


def test_global_masks_share_one_threshold():
    weights = {"a": torch.tensor([[0.1, -0.9], [0.4, 0.05]]), "b": torch.tensor([0.3, -0.2, 0.6])}
    masks = pruning.global_masks(weights, 4 / 7)  # remove 0.05, 0.1, 0.2, 0.3
    assert torch.equal(masks["a"], torch.tensor([[False, True], [True, False]]))
    assert torch.equal(masks["b"], torch.tensor([False, False, True]))
    # A tie across layers: the layer listed first loses its weight first.
    tied = pruning.global_masks({"a": torch.tensor([1.0, 0.5]), "b": torch.tensor([0.5, 2.0])}, 0.25)
    assert torch.equal(tied["a"], torch.tensor([True, False])) and tied["b"].all()


def test_sparsity_schedule_is_geometric_in_kept_fraction_and_ends_on_target():
    schedule = pruning.sparsity_schedule({"fc": 0.9, "conv": 0.5}, 3)
    assert len(schedule) == 3 and schedule[-1] == {"fc": 0.9, "conv": 0.5}
    assert schedule[0]["fc"] == pytest.approx(1 - 0.1 ** (1 / 3))
    assert schedule[1]["fc"] == pytest.approx(1 - 0.1 ** (2 / 3))
    assert schedule[0]["conv"] < schedule[1]["conv"] < schedule[2]["conv"]
    assert pruning.sparsity_schedule({"fc": 0.8}, 1) == [{"fc": 0.8}]


def test_targets_from_sensitivity_stops_at_first_failure():
    scan = {"conv": [(0.0, 0.90), (0.5, 0.89), (0.7, 0.85), (0.9, 0.895)],  # the lucky 0.9 is ignored
            "fc": [(0.5, 0.90), (0.9, 0.89), (0.99, 0.885), (0.999, 0.89)],
            "fragile": [(0.5, 0.5)]}
    targets = sensitivity.targets_from_sensitivity(scan, baseline_metric=0.90, tolerance=0.02,
                                               max_sparsity=0.99)
    assert targets == {"conv": 0.5, "fc": 0.99, "fragile": 0.0}
    losses = {"fc": [(0.5, 1.0), (0.9, 1.3)]}
    assert sensitivity.targets_from_sensitivity(losses, 1.0, 0.1, higher_is_better=False) == {"fc": 0.5}


@pytest.mark.parametrize("call, message", [
    (lambda: pruning.mask_from_sparsity(torch.ones(4), 1.5), "sparsity must be a number in"),
    (lambda: pruning.mask_from_sparsity(torch.ones(4), -0.1), "sparsity must be a number in"),
    (lambda: pruning.mask_from_sparsity(torch.ones(4), float("nan")), "sparsity must be"),
    (lambda: pruning.global_masks({"a": torch.ones(3)}, 2), "sparsity must be"),
    (lambda: pruning.quality_threshold(torch.ones(4), -1.0), "quality must be a non-negative"),
    (lambda: pruning.mask_from_threshold(torch.ones(4), -0.5), "threshold must be"),
    (lambda: pruning.sparsity_schedule({"fc": 0.9}, 0), "rounds must be a positive integer"),
    (lambda: pruning.sparsity_schedule({"fc": 1.2}, 3), "target sparsity of 'fc'"),
    (lambda: sensitivity.targets_from_sensitivity({}, 0.9, -0.1), "tolerance must be"),
])
def test_bad_values_raise_clear_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bad_model_level_inputs_raise_and_leave_model_untouched():
    model = lenet5()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"Unknown layer\(s\) \['features.7'\]"):
        pruning.prune_to_sparsity(model, {"features.0": 0.5, "features.7": 0.5})
    with pytest.raises(ValueError, match="sparsity of 'features.2' must be a number in"):
        pruning.prune_to_sparsity(model, {"features.0": 0.5, "features.2": 1.5})
    with pytest.raises(ValueError, match="quality must be a non-negative"):
        pruning.prune_by_quality(model, -0.5)
    with pytest.raises(ValueError, match="Unknown layer"):
        pruning.apply_masks(model, {"classifier.0": torch.ones(3, dtype=torch.bool)})  # Flatten
    with pytest.raises(ValueError, match="has shape"):
        pruning.apply_masks(model, {"features.0": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="Unknown layer"):
        sensitivity.sensitivity_scan(model, lambda m: 0.0, [0.5], layers=["nope"])
    with pytest.raises(ValueError, match="sparsity must be"):
        sensitivity.sensitivity_scan(model, lambda m: 0.0, [0.5, 1.01])
    with pytest.raises(ValueError, match="Unknown layer"):
        pruning.load_pruned_state_dict(
            model, {"features.9.parametrizations.weight.0.mask": torch.ones(3, dtype=torch.bool)})
    assert_state_dicts_equal(model.state_dict(), before)


# ---------------------------------------------------------------------------------------------
# Model level
# ---------------------------------------------------------------------------------------------


def test_global_pruning_hits_overall_sparsity_on_a_model():
    model = lenet5()
    total = sum(layer.weight.numel() for layer in models.compressible_layers(model).values())
    pruning.prune_globally(model, 0.8)
    assert pruning.total_kept_fraction(model) == pytest.approx(0.2, abs=1 / total)
    fractions = pruning.kept_fractions(model)
    assert len(set(round(f, 3) for f in fractions.values())) > 1  # one threshold, uneven layers
    removed = sum((~m).sum().item() for m in pruning.current_masks(model).values())
    assert removed == round(0.8 * total)
    weights = {n: layer.parametrizations.weight.original.detach().abs()
               for n, layer in models.compressible_layers(model).items()}
    masks = pruning.current_masks(model)
    smallest_kept = min(weights[n][masks[n]].min() for n in masks)
    largest_removed = max(weights[n][~masks[n]].max() for n in masks)
    assert largest_removed <= smallest_kept


def test_masks_appear_in_state_dict_and_apply_masks_updates_in_place():
    model = lenet5()
    bias = model.features[0].bias.detach().clone()
    pruning.prune_to_sparsity(model, {"features.0": 0.5})
    keys = set(model.state_dict())
    assert {"features.0.parametrizations.weight.0.mask",
            "features.0.parametrizations.weight.original", "features.0.bias"} <= keys
    assert "features.0.weight" not in keys and "features.2.weight" in keys
    assert model.state_dict()["features.0.parametrizations.weight.0.mask"].dtype == torch.bool
    assert pruning.kept_fractions(model)["features.0"] == 0.5
    assert pruning.kept_fractions(model)["features.2"] == 1.0

    model(batch()[0])  # fills the mask's float copy, which must follow later updates
    old_mask = pruning.current_masks(model)["features.0"]
    before = model.features[0].weight.detach().clone()
    new = torch.zeros(20, 1, 5, 5, dtype=torch.bool)
    new[:, :, 2, 2] = True
    pruning.apply_masks(model, {"features.0": new})
    pruning.apply_masks(model, {"features.0": new})
    assert len(model.features[0].parametrizations.weight) == 1
    weight = model.features[0].weight
    # Kept survivors keep their values; weights a looser mask lets back in start at exactly zero.
    assert torch.equal(weight != 0, new & old_mask)
    assert torch.equal(weight[new & old_mask], before[new & old_mask])
    assert torch.equal(model.features[0].bias, bias)
    assert not hasattr(model.features[0], "parametrizations") or \
        "bias" not in model.features[0].parametrizations


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-3),
    lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3),
], ids=["sgd-momentum-wd", "adam"])
def test_pruned_weights_stay_exactly_zero_through_training(make_optimizer):
    model = lenet5()
    optimizer = make_optimizer(model.parameters())
    train(model, optimizer, 3)  # optimizer state (momentum) exists before pruning
    masks = pruning.prune_to_sparsity(model, 0.7)
    start = effective_weights(model)
    train(model, optimizer, 25)
    assert_pruned_are_zero(model, masks)
    for name, mask in pruning.current_masks(model).items():
        assert torch.equal(mask, masks[name])
        assert not torch.equal(model.get_submodule(name).weight[mask], start[name][mask]), name
    # Straight-through backward: the dense gradient reaches original; masked_gradients() zeroes
    # the pruned part (before clipping by norm) and leaves the survivors' gradient as it was.
    grad = model.features[2].parametrizations.weight.original.grad
    pruned = ~masks["features.2"]
    assert grad[pruned].abs().sum() > 0
    kept = grad[~pruned].clone()
    pruning.masked_gradients(model)
    assert torch.equal(grad[pruned], torch.zeros(int(pruned.sum())))
    assert torch.equal(grad[~pruned], kept)


def test_survivors_train_exactly_as_with_a_masked_gradient():
    # Oracle: plain autograd through ``weight * mask`` (the gradient of pruned weights is zero).
    class MultiplyByMask(nn.Module):
        def __init__(self, mask):
            super().__init__()
            self.mask = mask.float()

        def forward(self, weight):
            return weight * self.mask

    model = lenet5()
    masks = pruning.prune_to_sparsity(model, 0.6)
    reference = lenet5()
    for name, layer in models.compressible_layers(reference).items():
        torch.nn.utils.parametrize.register_parametrization(layer, "weight", MultiplyByMask(masks[name]))
    for net in (model, reference):
        train(net, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4), 5)
    for name, ref in models.compressible_layers(reference).items():
        ours = models.compressible_layers(model)[name].weight
        assert torch.equal(ours == 0, ref.weight == 0), name
        assert torch.allclose(ours, ref.weight, atol=1e-6), name


def test_several_forwards_before_one_backward():
    model = lenet5()
    masks = pruning.prune_to_sparsity(model, 0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):  # gradient accumulation: two forwards, one backward, one step
        (x1, y1), (x2, y2) = batch(seed=1), batch(seed=2)
        loss = nn.functional.cross_entropy(model(x1), y1) + nn.functional.cross_entropy(model(x2), y2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert_pruned_are_zero(model, masks)


def test_inference_first_then_training_works():
    model = lenet5()
    pruning.prune_to_sparsity(model, 0.3)
    masks = pruning.prune_to_sparsity(model, 0.5)  # the mask changed: its float copy is stale
    with torch.inference_mode():
        model(batch()[0])
    train(model, torch.optim.SGD(model.parameters(), lr=0.1), 2)
    assert_pruned_are_zero(model, masks)


def test_state_dict_round_trip_into_fresh_model_then_more_training(tmp_path):
    model = lenet5()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    train(model, optimizer, 2)
    masks = pruning.prune_to_sparsity(model, {"features.0": 0.3, "features.2": 0.6, "classifier.1": 0.9})
    train(model, optimizer, 3)
    torch.save(model.state_dict(), tmp_path / "pruned.pt")

    fresh = lenet5(seed=123)
    state = torch.load(tmp_path / "pruned.pt", weights_only=True)
    pruning.load_pruned_state_dict(fresh, state)
    assert_state_dicts_equal(fresh.state_dict(), model.state_dict())
    restored = pruning.current_masks(fresh)
    assert list(restored) == list(masks)
    assert all(torch.equal(restored[n], masks[n]) for n in masks)
    x, _ = batch(seed=5)
    model.eval(), fresh.eval()
    assert torch.equal(fresh(x), model(x))

    train(fresh, torch.optim.SGD(fresh.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4), 10)
    assert_pruned_are_zero(fresh, masks)
    assert all(torch.equal(m, masks[n]) for n, m in pruning.current_masks(fresh).items())


def test_deepcopy_of_pruned_model_is_independent():
    model = lenet5()
    masks = pruning.prune_to_sparsity(model, 0.5)
    clone = copy.deepcopy(model)
    train(clone, torch.optim.SGD(clone.parameters(), lr=0.1, momentum=0.9), 3)
    assert_pruned_are_zero(clone, masks)
    assert not torch.equal(clone.features[0].weight, model.features[0].weight)
    # The copy shares the injected Parametrized* classes: baking it must not break the original.
    pruning.remove_masks(clone)
    assert model(batch()[0]).shape == (16, 10)
    assert list(pruning.current_masks(model)) == list(masks)


def test_repruning_never_revives_weights():
    model = lenet5()
    first = pruning.prune_to_sparsity(model, 0.5)
    with torch.no_grad():  # the dense originals of pruned weights may grow (momentum before pruning)
        for name, layer in models.compressible_layers(model).items():
            layer.parametrizations.weight.original[~first[name]] = 100.0
    second = pruning.prune_to_sparsity(model, 0.8)
    for name in first:
        assert not (second[name] & ~first[name]).any(), name
        assert (~second[name]).sum() == round(0.8 * second[name].numel())
    third = pruning.prune_to_sparsity(model, 0.3)  # a lower target leaves layers as they are
    assert all(torch.equal(third[n], second[n]) for n in second)
    fourth = pruning.prune_by_quality(model, 1.0)
    assert all(not (fourth[n] & ~second[n]).any() for n in second)
    fifth = pruning.prune_globally(model, 0.9)
    assert all(not (fifth[n] & ~fourth[n]).any() for n in fourth)
    assert_pruned_are_zero(model, fifth)


def test_prune_by_quality_per_layer_dict_uses_layer_std():
    model = lenet5()
    w = model.classifier[1].weight.detach().clone()
    masks = pruning.prune_by_quality(model, {"classifier.1": 1.5})
    assert list(masks) == ["classifier.1"]
    assert torch.equal(masks["classifier.1"], w.abs() > 1.5 * w.std().item())
    assert list(pruning.current_masks(model)) == ["classifier.1"]


def test_remove_masks_bakes_zeros_into_the_same_parameter():
    model = lenet5()
    masks = pruning.prune_to_sparsity(model, 0.6)
    params = {n: layer.parametrizations.weight.original
              for n, layer in models.compressible_layers(model).items()}
    expected = effective_weights(model)
    pruning.remove_masks(model)
    assert not any(hasattr(layer, "parametrizations")
                   for layer in models.compressible_layers(model).values())
    assert type(model.features[0]) is nn.Conv2d and type(model.classifier[1]) is nn.Linear
    for name, layer in models.compressible_layers(model).items():
        assert layer.weight is params[name]
        assert torch.equal(layer.weight, expected[name])
    assert "features.0.weight" in model.state_dict()
    assert pruning.current_masks(model) == {}
    assert_pruned_are_zero(model, masks)


def test_sensitivity_scan_leaves_model_bit_identical():
    model = lenet5()
    pruning.prune_to_sparsity(model, {"features.2": 0.5})  # one layer already masked
    x, y = batch(seed=3, n=32)
    before = copy.deepcopy(model.state_dict())
    weight_objects = [p for p in model.parameters()]
    seen = []

    @torch.no_grad()
    def accuracy(m):
        m.eval()
        seen.append({n: layer.weight.count_nonzero().item() / layer.weight.numel()
                     for n, layer in models.compressible_layers(m).items()})
        return (m(x).argmax(1) == y).float().mean().item()

    grid = [0.0, 0.5, 0.9]
    scan = sensitivity.sensitivity_scan(model, accuracy, grid)
    assert list(scan) == list(models.compressible_layers(model))
    assert all([s for s, _ in curve] == grid and all(0 <= a <= 1 for _, a in curve)
               for curve in scan.values())
    # While "classifier.1" was scanned at 0.9 only it was pruned, and the existing mask held.
    during = seen[list(scan).index("classifier.1") * 3 + 2]
    assert during["classifier.1"] == pytest.approx(0.1, abs=1e-4)
    assert during["features.2"] == 0.5 and during["features.0"] == 1.0
    # features.2 at 0.0 keeps its existing 50% mask (never revived).
    assert seen[list(scan).index("features.2") * 3]["features.2"] == 0.5
    assert_state_dicts_equal(model.state_dict(), before)
    assert all(a is b for a, b in zip(model.parameters(), weight_objects))
    assert type(model.features[0]) is nn.Conv2d

    def failing(m):
        raise RuntimeError("evaluation broke")

    with pytest.raises(RuntimeError, match="evaluation broke"):
        sensitivity.sensitivity_scan(model, failing, grid)
    assert_state_dicts_equal(model.state_dict(), before)


@pytest.mark.parametrize("name, in_channels, image_size", [
    ("lenet300", 1, 28), ("lenet5", 1, 28), ("alexnet", 3, 63), ("vgg16", 3, 32),
])
def test_every_architecture_masks_all_conv_and_linear_weights(name, in_channels, image_size):
    torch.manual_seed(0)
    model = models.create(name, 10, in_channels=in_channels, image_size=image_size)
    layers = models.compressible_layers(model)
    biases = {n: layer.bias.detach().clone() for n, layer in layers.items()}
    masks = pruning.prune_by_quality(model, 0.5)
    assert list(masks) == list(layers) and len(layers) == {"lenet300": 3, "lenet5": 4,
                                                           "alexnet": 8, "vgg16": 16}[name]
    keys = set(model.state_dict())
    for n, layer in layers.items():
        assert f"{n}.parametrizations.weight.0.mask" in keys
        assert torch.equal(layer.bias, biases[n]) and "bias" not in layer.parametrizations
    fractions = pruning.kept_fractions(model)
    assert all(0.5 < f < 0.8 for f in fractions.values())  # |w| > 0.5 std keeps ~62% of a bell curve
    assert 0.5 < pruning.total_kept_fraction(model) < 0.8


def test_targets_for_budget_meets_the_budget_and_no_more():
    scan = {"big": [(0.5, 0.90), (0.9, 0.80)], "small": [(0.5, 0.88), (0.9, 0.50)]}
    sizes = {"big": 100, "small": 10}
    # within 0.02 only 50% of each layer may go: 55 of 110 kept, within a 50% budget
    targets, tol = sensitivity.targets_for_budget(scan, 0.90, sizes, 0.02, max_kept=0.5)
    assert targets == {"big": 0.5, "small": 0.5} and tol == pytest.approx(0.02)
    # a loose tolerance would prune both layers to 90%; the budget needs no more than 50%
    targets, tol = sensitivity.targets_for_budget(scan, 0.90, sizes, 0.5, max_kept=0.5)
    assert targets == {"big": 0.5, "small": 0.5} and tol == pytest.approx(0.02)
    # the tolerant big layer gives up more first: 10 + 5 = 15 of 110 kept
    targets, tol = sensitivity.targets_for_budget(scan, 0.90, sizes, 0.02, max_kept=0.2)
    assert targets == {"big": 0.9, "small": 0.5} and tol == pytest.approx(0.10)
    targets, tol = sensitivity.targets_for_budget(scan, 0.90, sizes, 0.02, max_kept=0.01)
    assert targets == {"big": 0.9, "small": 0.9} and tol is None
    targets, tol = sensitivity.targets_for_budget(scan, 0.90, sizes, 0.02, max_kept=0.01, max_sparsity=0.3)
    assert targets == {"big": 0.0, "small": 0.0} and tol is None


def test_targets_by_cost_per_weight_spends_accuracy_where_weights_are_cheap():
    # fc: 0.03 for 900 weights (3.3e-5 a weight); conv: 0.03 for 5 weights (6e-3 a weight)
    scan = {"fc": [(0.5, 0.88), (0.9, 0.87), (0.99, 0.80)], "conv": [(0.5, 0.87), (0.9, 0.70)]}
    sizes = {"fc": 1000, "conv": 10}
    targets, drop = sensitivity.targets_by_cost_per_weight(scan, 0.90, sizes, max_kept=0.5)
    assert targets == {"fc": 0.9, "conv": 0.0} and drop == pytest.approx(0.03)
    # one tolerance for all layers needs 0.03 to meet the budget, and then prunes conv as well
    targets, tol = sensitivity.targets_for_budget(scan, 0.90, sizes, 0.0, max_kept=0.5)
    assert targets == {"fc": 0.9, "conv": 0.5} and tol == pytest.approx(0.03)
    # the cheapest step a weight may go well past the budget (110 of 1010 kept for a 60% budget)
    assert sensitivity.targets_by_cost_per_weight(scan, 0.90, sizes, max_kept=0.6)[0] == {"fc": 0.9, "conv": 0.0}
    assert sensitivity.targets_by_cost_per_weight(scan, 0.90, sizes, max_kept=1.0) == ({"fc": 0.0, "conv": 0.0}, 0.0)


def test_targets_by_cost_per_weight_distrusts_lucky_points_and_reports_an_unreachable_budget():
    # a's 0.9 point scored better than its 0.5 point (noise): its drop there counts as 0.05, not
    # 0.01, so b's 0.02 for 50 weights is the cheaper step
    scan = {"a": [(0.5, 0.85), (0.9, 0.89)], "b": [(0.5, 0.88), (0.9, 0.86)]}
    sizes = {"a": 100, "b": 100}
    targets, drop = sensitivity.targets_by_cost_per_weight(scan, 0.90, sizes, max_kept=0.75)
    assert targets == {"a": 0.0, "b": 0.5} and drop == pytest.approx(0.02)
    targets, drop = sensitivity.targets_by_cost_per_weight(scan, 0.90, sizes, max_kept=0.05)
    assert targets == {"a": 0.9, "b": 0.9} and drop is None
    targets, drop = sensitivity.targets_by_cost_per_weight(scan, 0.90, sizes, max_kept=0.05, max_sparsity=0.6)
    assert targets == {"a": 0.5, "b": 0.5} and drop is None
    with pytest.raises(ValueError, match="max_kept"):
        sensitivity.targets_by_cost_per_weight(scan, 0.90, sizes, max_kept=1.5)


def test_allocate_budget_dispatches_by_name_and_rejects_unknown_names():
    scan = {"fc": [(0.5, 0.88), (0.9, 0.87), (0.99, 0.80)], "conv": [(0.5, 0.87), (0.9, 0.70)]}
    sizes = {"fc": 1000, "conv": 10}
    assert sensitivity.allocate_budget("tolerance", scan, 0.90, sizes, 0.0, 0.5) == \
        ({"fc": 0.9, "conv": 0.5}, "tolerance used 0.030")
    assert sensitivity.allocate_budget("cost_per_weight", scan, 0.90, sizes, 0.0, 0.5) == \
        ({"fc": 0.9, "conv": 0.0}, "summed single-layer drop 0.030")
    assert sensitivity.allocate_budget("cost_per_weight", scan, 0.90, sizes, 0.0, 0.001)[1] is None
    assert sensitivity.kept_share({"fc": 0.9, "conv": 0.5}, sizes) == pytest.approx(105 / 1010)
    with pytest.raises(ValueError, match="budget_allocation 'greedy' is unknown; choose one of tolerance"):
        sensitivity.allocate_budget("greedy", scan, 0.90, sizes, 0.0, 0.5)


def test_further_schedule_keeps_a_share_of_the_survivors_each_round():
    rounds = pruning.further_schedule({"fc1": 0.9, "fc2": 0.5, "conv1": 0.0}, keep=0.5, rounds=3)
    assert [r["fc1"] for r in rounds] == pytest.approx([0.95, 0.975, 0.9875])
    assert [r["fc2"] for r in rounds] == pytest.approx([0.75, 0.875, 0.9375])
    assert [r["conv1"] for r in rounds] == [0.0] * 3, "a layer the plan keeps whole stays whole"
    assert pruning.further_schedule({"fc1": 0.9}, keep=0.5, rounds=0) == []
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="keep must be a fraction"):
            pruning.further_schedule({"fc1": 0.9}, keep=bad, rounds=2)
    with pytest.raises(ValueError, match="rounds must be an integer"):
        pruning.further_schedule({"fc1": 0.9}, keep=0.5, rounds=-1)
    with pytest.raises(ValueError, match="planned sparsity"):
        pruning.further_schedule({"fc1": 1.2}, keep=0.5, rounds=1)
