"""The past-plan stopping rule (helpers.prune.stopping): paired counts, their standard error, McNemar's
test, and a decision that does not depend on the order or batch size of the validation images."""

import math

import pytest
import torch
from torch import nn

from helpers.prune import stopping


def _counts(images, only_baseline, only_candidate, both=None, baseline_loss=1.0, candidate_loss=1.0):
    both = images // 2 if both is None else both
    return stopping.PairedCounts(images, both, only_baseline, only_candidate, baseline_loss, candidate_loss)


def test_paired_difference_and_its_standard_error_by_hand():
    # 10 images: d = -1 on two, +1 on one, 0 on seven -> mean -0.1, sample variance (3 - 10 * 0.01) / 9
    difference, standard_error = stopping.paired_difference(_counts(10, 2, 1, both=5))
    assert difference == pytest.approx(-0.1)
    assert standard_error == pytest.approx(math.sqrt(2.9 / 9 / 10))
    assert stopping.paired_difference(_counts(10, 0, 0)) == (0.0, 0.0), "no disagreement: no noise"


def test_the_standard_error_matches_the_per_image_vector_and_the_counts_match_their_definition():
    generator = torch.Generator().manual_seed(0)
    baseline_right = torch.rand(1743, generator=generator) < 0.45
    candidate_right = baseline_right ^ (torch.rand(1743, generator=generator) < 0.15)
    counts = stopping.counts_from_correct(baseline_right, candidate_right)
    per_image = candidate_right.float() - baseline_right.float()
    difference, standard_error = stopping.paired_difference(counts)
    assert difference == pytest.approx(float(per_image.mean()))
    assert standard_error == pytest.approx(float(per_image.std(unbiased=True)) / math.sqrt(1743))
    assert counts.baseline_accuracy == pytest.approx(float(baseline_right.float().mean()))
    assert counts.candidate_accuracy == pytest.approx(float(candidate_right.float().mean()))


@pytest.mark.parametrize("worse, better", [(0, 0), (2, 1), (1, 9), (30, 12), (60, 42), (200, 50)])
def test_mcnemar_matches_the_exact_binomial_test(worse, better):
    stats = pytest.importorskip("scipy.stats")
    expected = 1.0 if worse + better == 0 else stats.binomtest(worse, worse + better, 0.5).pvalue
    assert stopping.mcnemar_p(worse, better) == pytest.approx(expected, rel=1e-9)


def test_a_loss_within_the_noise_is_kept_and_a_clear_one_is_refused():
    # ~the case: 1,743 validation images, the pruned model 1.03 points under the baseline
    # (tolerance 0.5): a coin toss for the point estimate, well within the paired noise
    noisy = _counts(1743, 70, 52)
    assert not stopping.decide(noisy, 0.005)["accepted"], "the point-estimate rule refuses it"
    evidence = stopping.decide(noisy, 0.005, z=1.645)
    assert evidence["accepted"] and evidence["difference"] == pytest.approx(-18 / 1743)
    assert evidence["threshold"] == pytest.approx(-0.005 - 1.645 * evidence["standard_error"])
    assert evidence["mcnemar_p"] > 0.1 and evidence["counts"]["images"] == 1743
    clear = stopping.decide(_counts(1743, 200, 50), 0.005, z=1.645)
    assert not clear["accepted"] and clear["mcnemar_p"] < 1e-10, "8.6 points down is no noise"
    assert stopping.decide(_counts(1743, 0, 0), 0.0, z=1.645)["accepted"], "identical predictions"


def test_the_loss_gate_refuses_a_round_whose_accuracy_alone_would_pass():
    counts = _counts(100, 0, 0, baseline_loss=1.0, candidate_loss=1.2)
    assert stopping.decide(counts, 0.0, z=1.0)["accepted"]
    assert not stopping.decide(counts, 0.0, z=1.0, loss_tolerance=0.1)["accepted"]
    assert stopping.decide(counts, 0.0, z=1.0, loss_tolerance=0.25)["accepted"]


@pytest.mark.parametrize("bad, message", [
    (dict(counts=(10, 5, -1, 0)), "inconsistent paired counts"),
    (dict(counts=(10, 8, 2, 1)), "inconsistent paired counts"),
    (dict(counts=(0, 0, 0, 0)), "over no images"),
    (dict(tolerance=1.0), "tolerance must be a fraction"),
    (dict(z=-1.0), "z must be a finite number"),
    (dict(z=float("nan")), "z must be a finite number"),
])
def test_bad_counts_and_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        counts = stopping.PairedCounts(*bad.get("counts", (10, 5, 1, 1)), 1.0, 1.0)
        stopping.decide(counts, bad.get("tolerance", 0.0), bad.get("z", 1.0))


def _pair_of_models():
    torch.manual_seed(0)
    baseline = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 5))
    candidate = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 5))
    candidate.load_state_dict(baseline.state_dict())
    with torch.no_grad():  # the candidate: the baseline with half its first layer's weights zeroed
        weight = candidate[0].weight
        weight[weight.abs() < weight.abs().median()] = 0
    return baseline, candidate


def test_the_decision_does_not_depend_on_the_order_or_batch_size_of_the_validation_images():
    baseline, candidate = _pair_of_models()
    generator = torch.Generator().manual_seed(1)
    images, labels = torch.randn(600, 8, generator=generator), torch.randint(0, 5, (600,), generator=generator)
    dataset = torch.utils.data.TensorDataset(images, labels)
    cpu = torch.device("cpu")
    results = []
    for batch_size, shuffle in ((1, False), (7, True), (64, True), (600, False)):
        order = torch.Generator().manual_seed(batch_size)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=order)
        counts = stopping.paired_counts(baseline, candidate, loader, cpu)
        results.append((counts.images, counts.both_right, counts.only_baseline_right, counts.only_candidate_right))
        for z in (None, 1.645):
            evidence = stopping.decide(counts, 0.005, z)
            results[-1] += (evidence["accepted"], evidence["difference"], evidence["standard_error"])
    assert all(r == results[0] for r in results), results
    assert results[0][2] + results[0][3] > 0, "the two models must disagree somewhere for the test to mean anything"
    empty = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images[:0], labels[:0]), batch_size=4)
    with pytest.raises(ValueError, match="empty loader"):
        stopping.paired_counts(baseline, candidate, empty, cpu)
