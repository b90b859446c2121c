"""helpers.prune.dead_units: units no layer reads, found from the masks; removing their inputs is lossless."""

import torch
from torch import nn

from helpers.prune import dead_units, pruning


def _mlp():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(inplace=True), nn.Linear(4, 3), nn.ReLU(),
                        nn.Linear(3, 2))
    masks = {"1": torch.ones(4, 6, dtype=torch.bool), "3": torch.ones(3, 4, dtype=torch.bool),
             "5": torch.ones(2, 3, dtype=torch.bool)}
    masks["3"][:, 1] = False  # nothing reads fc1's feature 1
    masks["5"][:, 2] = False  # nor fc2's feature 2, whose inputs then read fc1's feature 3 only
    masks["3"][2, :] = torch.tensor([False, False, False, True])
    pruning.apply_masks(net, masks)
    return net


def test_unread_units_are_found_from_the_masks():
    unused = dead_units.unused_units(_mlp(), torch.randn(5, 6))
    assert unused["1"].tolist() == [False, True, False, False]
    assert unused["3"].tolist() == [False, False, True]
    assert unused["5"].tolist() == [False, False]


def test_their_inputs_are_pruned_in_passes_and_the_outputs_stay_bit_for_bit():
    net = _mlp()
    x = torch.randn(8, 6)
    before = net(x)
    record = dead_units.remove_dead_units(net, x)
    assert record == {"units": {"1": 1, "3": 1}, "weights": {"1": 6, "3": 1}, "outputs_equal": True}
    assert not pruning.current_masks(net)["1"][1].any() and not pruning.current_masks(net)["3"][2].any()
    assert torch.equal(net(x), before)
    again = dead_units.remove_dead_units(net, x)
    assert again["units"] == {} and again["outputs_equal"]


def test_a_channel_read_after_pooling_and_flattening_or_by_a_skip_connection():
    torch.manual_seed(1)
    conv_net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, 2))
    head = torch.ones(2, 12, dtype=torch.bool)
    head[:, 8:] = False  # the columns of channel 2 (2 x 2 pooled positions each)
    pruning.apply_masks(conv_net, {"0": torch.ones(3, 1, 3, 3, dtype=torch.bool), "3": head})
    assert dead_units.unused_units(conv_net, torch.randn(1, 1, 6, 6))["0"].tolist() == [False, False, True]

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(torch.relu(x + self.inner(x)))

    res = Residual()
    head = torch.ones(2, 4, dtype=torch.bool)
    head[:, 0] = False  # the sum's feature 0 is read by nobody, so inner's feature 0 neither
    pruning.apply_masks(res, {"inner": torch.ones(4, 4, dtype=torch.bool), "head": head})
    assert dead_units.unused_units(res, torch.randn(1, 4))["inner"].tolist() == [True, False, False, False]


def test_a_misread_structure_is_undone_with_the_exact_weights(monkeypatch):
    net = _mlp()
    x = torch.randn(256, 6)  # enough inputs that every fc1 feature passes its ReLU somewhere
    exact = {k: v.clone() for k, v in net.state_dict().items()}
    monkeypatch.setattr(dead_units, "unused_units",
                        lambda model, example: {"1": torch.tensor([True, False, False, False])})
    record = dead_units.remove_dead_units(net, x)
    assert record == {"units": {}, "weights": {}, "outputs_equal": False}
    assert all(torch.equal(net.state_dict()[k], v) for k, v in exact.items())
