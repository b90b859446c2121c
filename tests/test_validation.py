"""Settings validation (helpers.pipeline.validation via helpers.pipeline.config) and progress lines (helpers.pipeline.progress)."""

import math

import pytest

from helpers.pipeline import config, progress, validation

BAD_OVERRIDES = [
    ({"epochs": -1}, "epochs = -1"), ({"batch_size": 0}, "batch_size = 0"),
    ({"target_kept": 2}, "target_kept = 2"), ({"target_kept": 0}, "target_kept = 0"),
    ({"fc_bits": 0}, "fc_bits = 0"), ({"conv_bits": 17}, "conv_bits = 17"),
    ({"depthwise_bits": 0}, "null (conv_bits) or an integer from 1 to 16"), ({"depthwise_bits": 8.0}, "depthwise_bits"),
    ({"prune_rounds": 0}, "prune_rounds = 0"), ({"budget_allocation": "magic"}, "budget_allocation"),
    ({"epochs": "3"}, "'3' (a string)"), ({"epochs": 0}, "epochs = 0"), ({"epochs": 1.5}, "1.5 (a float)"),
    ({"epochs": True}, "True (a boolean)"), ({"per_class": 5}, "per_class = 5"),
    ({"per_class": {"train": 0}}, "per_class"), ({"per_class": {"trian": 5}}, "per_class"),
    ({"epochs": {"lenet-5": 3}}, "['lenet-5'] name no model"), ({"epochs": {"alexnet": -2}}, "epochs['alexnet']"),
    ({"lr": math.nan}, "lr = nan"), ({"lr": 0}, "lr = 0"), ({"weight_decay": -1}, "weight_decay"),
    ({"warmup_epochs": -1}, "warmup_epochs"), ({"num_workers": 1.0}, "num_workers"),
    ({"cache_images": 1}, "cache_images"), ({"eval_batches": 0}, "eval_batches"),
    ({"sensitivity_sparsities": 5}, "sensitivity_sparsities"), ({"sensitivity_sparsities": []}, "sensitivity_sparsities"),
    ({"sensitivity_sparsities": [0.5, 1.0]}, "sensitivity_sparsities"), ({"sensitivity_tolerance": 1}, "sensitivity_tolerance"),
    ({"retrain_epochs": 0}, "retrain_epochs"), ({"retrain_lr_factor": -0.1}, "retrain_lr_factor"),
    ({"quant_epochs": "2"}, "quant_epochs"), ({"quant_lr_factor": math.inf}, "quant_lr_factor"),
    ({"world_size": 0}, "world_size"),
    ({"image_size": 100000}, "image_size = 100000"), ({"prune_rounds": {"lenet5": 2}}, "applies to every model"),
    ({"nmae": 3}, "Unknown profile field"), ({"name": "gpu"}, "Unknown profile field"),
]


@pytest.mark.parametrize("overrides,message", BAD_OVERRIDES)
def test_every_bad_override_is_refused_with_a_message_naming_it(overrides, message):
    with pytest.raises(config.SettingsError) as info:
        config.settings_for("ci", "lenet5", "digits", overrides)
    assert message in str(info.value) and isinstance(info.value, ValueError)


def test_several_problems_are_reported_together():
    with pytest.raises(config.SettingsError) as info:
        config.settings_for("ci", "lenet300", "digits", {"epochs": "3", "batch_size": 0})
    assert "epochs" in str(info.value) and "batch_size" in str(info.value)


def test_good_overrides_pass_and_per_model_keys_follow_the_registry():
    assert config.settings_for("ci", "lenet5", "digits", {"epochs": 2, "lr": 1})["epochs"] == 2
    assert config.settings_for("ci", "lenet5", "digits", {"epochs": {"resnet18": 3, "default": 2}})["epochs"] == 1
    assert config.settings_for("ci", "resnet18", "digits", {"epochs": {"default": 2}})["epochs"] == 2
    assert config.settings_for("ci", "lenet5", "digits", {"eval_batches": None})["eval_batches"] is None
    assert config.settings_for("ci", "lenet5", "digits", {"per_class": {"train": 3, "test": None}})["per_class"] == \
        {"train": 3, "test": None}


def test_unknown_dataset_or_model_is_refused():
    with pytest.raises(config.SettingsError, match="dataset = 'digitz' is unknown"):
        config.settings_for("ci", "lenet5", "digitz")
    with pytest.raises(config.SettingsError, match="model 'lenet-5' is unknown"):
        config.settings_for("ci", "lenet-5", "digits")


def test_every_resolved_field_of_every_profile_has_a_rule_and_passes_it():
    # a field added to Profile.for_model without a rule in helpers.pipeline.validation fails here
    table = validation.rules()
    for name in config.PROFILES:
        for model in ("lenet300", "lenet5", "alexnet", "vgg16"):
            settings = config.settings_for(name, model, "sea-animals")
            assert set(settings) <= set(table), set(settings) - set(table)


def test_check_settings_refuses_bools_and_non_dicts():
    good = config.settings_for("ci", "lenet300", "digits")
    with pytest.raises(config.SettingsError, match="batch_size = False"):
        config.check_settings({**good, "batch_size": False}, "lenet300")
    with pytest.raises(config.SettingsError, match="too small for lenet5: it needs at least 16 px"):
        config.check_settings({**good, "image_size": 12}, "lenet5")
    with pytest.raises(config.SettingsError, match="must be a dict"):
        config.check_settings([1, 2])


def test_resolve_settings_refuses_bad_overrides_before_making_folders(tmp_path, monkeypatch):
    monkeypatch.delenv("DC_OVERRIDES", raising=False)
    with pytest.raises(config.SettingsError):
        config.resolve_settings("digits", "", "lenet5", "ci", tmp_path / "run", 0, {"epochs": 0})
    assert not (tmp_path / "run").exists()


def test_digits_are_upscaled_to_lenet5s_smallest_input():
    import torch

    from helpers import models

    size = config.settings_for("demo", "lenet5", "digits")["image_size"]
    assert size == models.min_image_size("lenet5") == 16
    model = models.create("lenet5", 10, 1, size)
    assert model(torch.zeros(2, 1, size, size)).shape == (2, 10)


def test_progress_lines(capsys, monkeypatch):
    record = {"epoch": 7, "lr": 0.01, "train_loss": 1.8412, "val_top1": 0.3823, "time_s": 41.2}
    assert progress.epoch_line("lenet5 02 baseline", record, 30) == \
        "lenet5 02 baseline  epoch 7/30  loss 1.84  val 38.2%  41 s"
    assert progress.epoch_line("", {"epoch": 1}, 2) == "epoch 1/2"
    monkeypatch.delenv(progress.ENV_FLAG, raising=False)
    progress.emit("plain\nline")
    assert capsys.readouterr().out == "plain line\n"
    monkeypatch.setenv(progress.ENV_FLAG, "1")
    progress.fit_logger("lenet5 02 baseline", 30)(
        "epoch=7 lr=0.01 train_loss=1.8412 train_top1=0.5 time_s=41.2 val_loss=2 val_top1=0.3823 val_top5=0.9")
    out = capsys.readouterr().out
    assert progress.strip_marker(out.rstrip("\n")) == "lenet5 02 baseline  epoch 7/30  loss 1.84  val 38.2%  41 s"
    progress.fit_logger("x", 3)("resumed from a.pt after epoch 2")
    assert progress.strip_marker(capsys.readouterr().out.rstrip("\n")) == "x  resumed from a.pt after epoch 2"
    assert progress.strip_marker("ordinary output") is None
