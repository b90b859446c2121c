"""Knowledge distillation: the loss against a hand-written oracle and its known gradient, the frozen
teacher, ``fit`` with a teacher (one process and two), and the pipeline settings that turn it on."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from helpers import data, models, training
from helpers.pipeline import config
from helpers.pipeline.resume import STAGE_SETTINGS, SETTING_DEFAULTS
from helpers.pipeline.validation import SettingsError, check_settings

QUIET = dict(progress=False, log=lambda message: None)


def _logits(seed, shape=(6, 5)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


def test_the_loss_matches_a_hand_written_oracle():
    student, teacher, targets = _logits(0), _logits(1), torch.tensor([0, 1, 2, 3, 4, 0])
    weight, temperature = 0.7, 3.0
    p_teacher = torch.softmax(teacher / temperature, 1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student / temperature, 1))).sum(1).mean()
    hard = -torch.log_softmax(student, 1)[torch.arange(6), targets].mean()
    expected = (1 - weight) * hard + weight * temperature ** 2 * kl
    got = training.distillation_loss(student, teacher, targets, weight, temperature)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_weight_zero_is_plain_cross_entropy_to_the_bit():
    student, teacher, targets = _logits(2), _logits(3), torch.tensor([4, 3, 2, 1, 0, 1])
    got = training.distillation_loss(student, teacher, targets, 0.0, 4.0, label_smoothing=0.1)
    assert torch.equal(got, F.cross_entropy(student, targets, label_smoothing=0.1))


def test_the_soft_gradient_is_t_times_the_difference_of_softened_outputs():
    # d/ds [T^2 KL(softmax(t/T) || softmax(s/T))] = T (softmax(s/T) - softmax(t/T)) / batch
    student, teacher, targets = _logits(4).requires_grad_(), _logits(5), torch.zeros(6, dtype=torch.long)
    temperature = 2.5
    training.distillation_loss(student, teacher, targets, 1.0, temperature).backward()
    expected = temperature * (torch.softmax(student.detach() / temperature, 1) - torch.softmax(teacher / temperature, 1)) / 6
    torch.testing.assert_close(student.grad, expected, rtol=1e-5, atol=1e-7)


def test_a_student_that_agrees_with_its_teacher_feels_no_pull_and_the_teacher_gets_no_gradient():
    student = _logits(6).requires_grad_()
    teacher = student.detach().clone().requires_grad_()
    loss = training.distillation_loss(student, teacher, torch.zeros(6, dtype=torch.long), 1.0, 4.0)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert student.grad.abs().max() < 1e-6 and teacher.grad is None


@pytest.mark.parametrize("weight, temperature, message", [
    (1.5, 4.0, "weight must be a number in \\[0, 1\\]"), (-0.1, 4.0, "weight"), (True, 4.0, "weight"),
    (0.5, 0.0, "temperature must be a finite number > 0"), (0.5, float("inf"), "temperature"),
    (0.5, "4", "temperature")])
def test_bad_weights_and_temperatures_are_refused(weight, temperature, message):
    with pytest.raises(ValueError, match=message):
        training.distillation_loss(_logits(0), _logits(1), torch.zeros(6, dtype=torch.long), weight, temperature)


def test_logits_of_another_class_count_are_refused():
    with pytest.raises(ValueError, match="same classes"):
        training.distillation_loss(_logits(0), _logits(1, (6, 4)), torch.zeros(6, dtype=torch.long), 0.5, 4.0)


def test_the_criterion_keeps_a_frozen_copy_of_the_teacher():
    teacher = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    criterion = training.DistillationCriterion(teacher, 0.5, 2.0)
    images, targets = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    logits = torch.randn(5, 3, requires_grad=True)
    before = criterion(logits, targets, images)
    with torch.no_grad():
        teacher[0].weight.add_(1.0)  # the caller's model changes afterwards: the copy does not
    criterion.train()  # as a training loop would: the teacher's BatchNorm stays in eval mode
    assert not criterion.teacher.training
    after = criterion(logits, targets, images)
    assert torch.equal(before, after)
    after.backward()
    assert all(p.grad is None and not p.requires_grad for p in criterion.teacher.parameters())


def _toy(seed=0, n=96):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 4, (n,), generator=g)
    return data.loader(TensorDataset(x[:72], y[:72]), 16, shuffle=True, seed=seed), data.loader(TensorDataset(x[72:], y[72:]), 16)


def _lenet(seed):
    training.seed_everything(seed)
    return models.create("lenet5", 4, 1, 28)


def test_fit_with_weight_zero_ignores_the_teacher_and_a_positive_weight_needs_one():
    train, val = _toy()
    plain, taught = _lenet(1), _lenet(1)
    training.fit(plain, train, val, 1, "cpu", lr=0.05, **QUIET)
    training.fit(taught, train, val, 1, "cpu", lr=0.05, teacher=_lenet(2), distill_weight=0.0, **QUIET)
    for (name, a), b in zip(plain.state_dict().items(), taught.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="needs a teacher"):
        training.fit(_lenet(1), train, val, 1, "cpu", distill_weight=0.5, **QUIET)
    with pytest.raises(ValueError, match="temperature"):
        training.fit(_lenet(1), train, val, 1, "cpu", teacher=_lenet(2), distill_weight=0.5,
                     distill_temperature=-1, **QUIET)


def _agreement(student, teacher, loader):
    student.eval(), teacher.eval()
    with torch.no_grad():
        pairs = [(student(x).argmax(1), teacher(x).argmax(1)) for x, _ in loader]
    return sum(int((a == b).sum()) for a, b in pairs) / sum(len(a) for a, _ in pairs)


def test_distilling_with_weight_one_teaches_the_teachers_answers_not_the_labels():
    # the teacher learned other (random) labels for the same images; a student given the whole weight
    # on the teacher comes to answer as the teacher does, one trained on the labels does not
    train, val = _toy(3)
    images = torch.cat([x for x, _ in train])
    teacher = _lenet(4)
    other_labels = torch.randint(0, 4, (len(images),), generator=torch.Generator().manual_seed(9))
    training.fit(teacher, data.loader(TensorDataset(images, other_labels), 16, shuffle=True), None, 15, "cpu",
                 lr=0.01, **QUIET)
    taught, labelled = _lenet(5), _lenet(5)
    history = training.fit(taught, train, val, 15, "cpu", lr=0.05, teacher=teacher, distill_weight=1.0,
                           distill_temperature=2.0, **QUIET)
    training.fit(labelled, train, val, 15, "cpu", lr=0.05, **QUIET)
    assert _agreement(taught, teacher, train) >= 0.8
    assert _agreement(labelled, teacher, train) < _agreement(taught, teacher, train) - 0.3
    assert all("val_loss" in h for h in history)  # validation still reports the plain loss


@pytest.mark.parametrize("world_size", [1, 2])
def test_a_student_taught_only_by_its_own_copy_does_not_move_on_any_rank(world_size):
    # the soft term's gradient is zero while student and teacher agree, so with the whole weight on
    # the teacher and no weight decay the weights stay where they started; a rank that trained on
    # the labels instead (say, one that never got the teacher) would move them through DDP's average
    train, val = _toy(6)
    student = _lenet(7)
    start = {k: v.clone() for k, v in student.state_dict().items()}
    training.fit(student, train, val, 2, "cpu", lr=0.05, weight_decay=0.0, teacher=_lenet(7), distill_weight=1.0,
                 world_size=world_size, **QUIET)
    for name, value in student.state_dict().items():
        torch.testing.assert_close(value, start[name], rtol=0, atol=1e-6, msg=name)
    labelled = _lenet(7)
    training.fit(labelled, train, val, 1, "cpu", lr=0.05, weight_decay=0.0, world_size=world_size, **QUIET)
    assert (labelled.state_dict()["classifier.3.weight"] - start["classifier.3.weight"]).abs().max() > 1e-3


def test_the_profiles_settings_validate_and_every_trained_stage_records_them():
    settings = config.settings_for("cpu", "lenet5")
    assert settings["distill_weight"] == 0.0 and SETTING_DEFAULTS["distill_weight"] == 0.0
    for stage in ("pruned", "dense_control", "quantized"):
        assert {"distill_weight", "distill_temperature"} <= set(STAGE_SETTINGS[stage])
    with pytest.raises(SettingsError, match="distill_weight"):
        check_settings({**settings, "distill_weight": 2})
    with pytest.raises(SettingsError, match="distill_temperature"):
        check_settings({**settings, "distill_temperature": 0})
