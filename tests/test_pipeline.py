"""helpers.compress and the stage functions on models the registry does not build, on real photos."""

import json
import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers.quantize import bit_allocation, quantization
from helpers.pipeline import config, prune_stages
from helpers import data, load_compressed, models, pipeline, placement, training

REPO = Path(__file__).resolve().parent.parent
CLASSES = 4


def _sea_animals() -> Path:
    for candidate in (os.environ.get("DC_DATA_DIR"), REPO.parent / "shared" / "data" / "sea-animals"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    pytest.skip("the Sea Animals images are not here: set DC_DATA_DIR (CI has ../shared/data/sea-animals)")


@pytest.fixture(scope="module")
def four_classes(tmp_path_factory) -> Path:
    """The first four classes of the real images, 12 each (links, not copies)."""
    source = _sea_animals()
    root = tmp_path_factory.mktemp("four-classes")
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir())[:CLASSES]:
        (root / class_dir.name).mkdir()
        for image in sorted(class_dir.iterdir())[:12]:
            (root / class_dir.name / image.name).symlink_to(image.resolve())
    return root


@pytest.fixture(scope="module")
def loaders(four_classes, tmp_path_factory):
    split_file = tmp_path_factory.mktemp("split") / "split.json"
    splits = data.load_splits("folder", four_classes, image_size=32, split_file=split_file,
                              per_class={"train": 6, "val": 2, "test": 2})
    assert len(splits.class_names) == CLASSES
    make = lambda part, shuffle=False: data.loader(getattr(splits, part), 8, shuffle=shuffle)
    return make("train", True), make("val"), make("test")


class CustomNet(nn.Module):
    """Conv + BatchNorm, a residual block, a depthwise conv, biases and a Linear head."""

    def __init__(self, num_classes=CLASSES):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                   nn.Conv2d(32, 32, 3, padding=1))
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.pointwise = nn.Conv2d(32, 64, 1)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        x = torch.relu(self.pointwise(self.depthwise(x)))
        return self.head(x.mean((2, 3)))


CI = dict(profile="ci", epochs=1, device="cpu")


def _check_compressed(result, model, reloaded, test_loader, bits=(8, 5)):
    stages = result["stages"]
    path = Path(result["file"])
    assert path.exists() and path.stat().st_size == stages["compressed"]["size_bytes"]
    assert stages["compressed"]["same_outputs_as_quantized"] is True
    model.cpu().eval(), reloaded.eval()
    with torch.no_grad():
        for x, _ in test_loader:
            assert torch.equal(model(x).argmax(1), reloaded(x).argmax(1))
            assert torch.equal(model(x), reloaded(x))
    distinct = quantization.distinct_values(reloaded)
    for name, layer in models.compressible_layers(reloaded).items():
        limit = 2 ** (bits[0] if isinstance(layer, nn.Conv2d) else bits[1])
        assert distinct[name] <= limit, f"{name}: {distinct[name]} distinct values > {limit}"
    assert stages["baseline"]["size_bytes"] / path.stat().st_size >= 8, "the file is not 8x smaller than fp32"
    assert stages["compressed"]["test_accuracy"] == stages["quantized"]["test_accuracy"]


def test_compress_a_custom_module_and_load_it_into_an_instance(loaders, tmp_path):
    train, val, test = loaders
    model = CustomNet()
    result = pipeline.compress(model, train, val, tmp_path / "custom", test_loader=test, **CI)
    with pytest.raises(ValueError, match=r"model=MyNet|pass a fresh instance"):
        load_compressed(result["file"])
    reloaded = load_compressed(result["file"], model=CustomNet())
    _check_compressed(result, model, reloaded, test)
    # the depthwise conv is kept whole (the documented rule); BatchNorm statistics came back
    assert result["stages"]["pruned"]["per_layer_kept"]["depthwise"] == 1.0
    assert torch.equal(reloaded.stem[1].running_var, model.stem[1].running_var)
    assert not torch.equal(reloaded.stem[1].running_var, torch.ones(32)), "BatchNorm statistics were not stored"
    with pytest.raises(ValueError, match="head"):
        load_compressed(result["file"], model=CustomNet(num_classes=7))


def test_compress_with_channels_last_batches_records_it_and_restores_the_process_setting(loaders, tmp_path):
    train, val, test = loaders
    model = CustomNet()
    result = pipeline.compress(model, train, val, tmp_path / "nhwc", test_loader=test, channels_last=True, **CI)
    assert not placement.channels_last_enabled(), "compress() left its memory format on for the process"
    assert result["settings"]["channels_last"] is True
    assert all(record["channels_last"] is True for record in result["stages"].values())
    _check_compressed(result, model, load_compressed(result["file"], model=CustomNet()), test)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_compress_torchvision_models_that_rebuild_by_name(loaders, tmp_path, name):
    train, val, test = loaders
    model = models.create(name, CLASSES, 3, 32)
    result = pipeline.compress(model, train, val, tmp_path / name, test_loader=test, **CI)
    reloaded = load_compressed(result["file"])
    assert reloaded.create_args["name"] == name
    _check_compressed(result, model, reloaded, test)


def test_a_run_folder_made_with_other_settings_is_refused_not_resumed(loaders, tmp_path):
    train, val, test = loaders
    out = tmp_path / "run"
    settings = pipeline.settings_for("ci", "lenet5", epochs=2)
    model = models.create("lenet5", CLASSES, 3, 32)
    first = pipeline.train_baseline(model, train, val, settings, out, test_loader=test, device=torch.device("cpu"))
    assert first["epochs"] == 2 and len(first["history"]) == 2
    again = pipeline.train_baseline(models.create("lenet5", CLASSES, 3, 32), train, val, settings, out,
                                    device=torch.device("cpu"))
    assert again == first, "the same settings resume (here: the finished stage is reused)"
    with pytest.raises(pipeline.StaleRunError, match=r"epochs=2 there, 3 now.*another run folder"):
        pipeline.train_baseline(models.create("lenet5", CLASSES, 3, 32), train, val,
                                pipeline.settings_for("ci", "lenet5", epochs=3), out, device=torch.device("cpu"))
    with pytest.raises(pipeline.StaleRunError, match="architecture"):
        pipeline.train_baseline(models.create("lenet5", CLASSES + 1, 3, 32), train, val, settings, out,
                                device=torch.device("cpu"))


def test_an_interrupted_stage_with_other_settings_is_refused(loaders, tmp_path):
    """A checkpoint left by a killed run (no finished stage yet) is not resumed under other settings."""
    train, val, _ = loaders
    out = tmp_path / "run"
    settings = pipeline.settings_for("ci", "lenet300", epochs=1)
    pipeline.train_baseline(models.create("lenet300", CLASSES, 3, 32), train, val, settings, out,
                            device=torch.device("cpu"))
    (out / "baseline.pt").unlink()  # as if killed after the checkpoint, before the stage finished
    with pytest.raises(pipeline.StaleRunError, match="lr="):
        pipeline.train_baseline(models.create("lenet300", CLASSES, 3, 32), train, val,
                                pipeline.settings_for("ci", "lenet300", epochs=1, lr=0.5), out,
                                device=torch.device("cpu"))
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "baseline_checkpoint.pt").write_bytes(b"")
    with pytest.raises(pipeline.StaleRunError, match="older version"):
        pipeline.train_baseline(models.create("lenet300", CLASSES, 3, 32), train, val, settings, legacy,
                                device=torch.device("cpu"))


def test_stages_out_of_order_say_what_to_run_first(loaders, tmp_path):
    train, val, _ = loaders
    settings = pipeline.settings_for("ci", "lenet5")
    with pytest.raises(pipeline.MissingStageError, match=r"baseline.pt is missing: run train_baseline \(notebook 02\)"):
        pipeline.plan_pruning(models.create("lenet5", CLASSES, 3, 32), val, settings, tmp_path,
                              device=torch.device("cpu"))
    with pytest.raises(pipeline.MissingStageError, match="run quantize"):
        pipeline.encode(models.create("lenet5", CLASSES, 3, 32), settings, tmp_path)


def test_prunable_layers_rule():
    net = CustomNet()
    chosen = pipeline.prunable_layers(net)
    assert "depthwise" not in chosen, "depthwise 3x3 filters are kept whole"
    assert {"stem.0", "block.0", "block.3", "pointwise", "head"} == set(chosen)
    tiny = nn.Sequential(nn.Linear(8, 31), nn.Linear(31, 8))  # 248 weights each
    assert pipeline.prunable_layers(tiny) == {}, "layers under MIN_PRUNABLE_WEIGHTS are kept whole"


def test_settings_for_uses_the_default_entry_for_unknown_models():
    custom = pipeline.settings_for("cpu", "CustomNet")
    assert custom["target_kept"] == 0.15 and custom["budget_allocation"] == "cost_per_weight"
    assert pipeline.settings_for("cpu", "lenet5")["target_kept"] == 0.075
    assert pipeline.settings_for("ci", "CustomNet", epochs=4)["epochs"] == 4
    assert json.loads(json.dumps(custom))  # a settings record is plain JSON


def test_extra_rounds_and_keep_are_per_model_and_a_plain_value_sets_one_model():
    alexnet, lenet5 = pipeline.settings_for("cpu", "alexnet"), pipeline.settings_for("cpu", "lenet5")
    assert (alexnet["extra_rounds"], alexnet["extra_keep"]) == (12, 0.9)
    assert (lenet5["extra_rounds"], lenet5["extra_keep"]) == (6, 0.8)
    assert pipeline.settings_for("cpu", "CustomNet")["extra_rounds"] == 0, "other models: the plan only"
    assert pipeline.settings_for("cpu", "lenet5", extra_keep=0.7)["extra_keep"] == 0.7
    assert pipeline.settings_for("cpu", "lenet300", extra_keep={"lenet5": 0.7})["extra_keep"] == 0.8
    assert config.get_profile("cpu", extra_rounds=3).for_model("vgg16")["extra_rounds"] == 3


def test_dense_control_trains_the_baseline_as_long_with_nothing_pruned(loaders, tmp_path):
    train, val, test = loaders
    settings = pipeline.settings_for("ci", "lenet5", epochs=1, prune_rounds=2, retrain_epochs=1)
    cpu = torch.device("cpu")
    pipeline.train_baseline(models.create("lenet5", CLASSES, 3, 32), train, val, settings, tmp_path, device=cpu)
    model = models.create("lenet5", CLASSES, 3, 32)
    record = pipeline.dense_control(model, train, val, settings, tmp_path, test_loader=test, device=cpu)
    assert record["epochs"] == 2 and [r["kept"] for r in record["rounds"]] == [1.0, 1.0]
    assert all(bool((layer.weight != 0).all()) for layer in models.compressible_layers(model).values())
    baseline = models.create("lenet5", CLASSES, 3, 32)
    baseline.load_state_dict(torch.load(tmp_path / "baseline.pt", weights_only=True))
    assert not torch.equal(baseline.classifier[-1].weight, model.classifier[-1].weight), "the control did not train"
    with pytest.raises(pipeline.StaleRunError, match="retrain_epochs=1 there, 2 now"):
        pipeline.dense_control(models.create("lenet5", CLASSES, 3, 32), train, val,
                               pipeline.settings_for("ci", "lenet5", epochs=1, prune_rounds=2, retrain_epochs=2),
                               tmp_path, device=cpu)


def test_distillation_teaches_every_trained_stage_from_the_baseline(loaders, tmp_path, monkeypatch):
    train, val, test = loaders
    calls, real_fit = [], training.fit

    def spy(model, *args, **kwargs):
        calls.append({k: kwargs.get(k) for k in ("teacher", "distill_weight", "distill_temperature")})
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(training, "fit", spy)
    settings = _pruned_until_plan(loaders, tmp_path, distill_weight=0.5, distill_temperature=3.0)
    assert calls[0]["teacher"] is None, "the baseline has no teacher"
    cpu = torch.device("cpu")
    model = models.create("lenet5", CLASSES, 3, 32)
    pipeline.prune_and_retrain(model, train, val, settings, tmp_path, device=cpu)
    pipeline.dense_control(models.create("lenet5", CLASSES, 3, 32), train, val, settings, tmp_path, device=cpu)
    pipeline.quantize(model, train, val, settings, tmp_path, device=cpu)
    baseline = torch.load(tmp_path / "baseline.pt", weights_only=True)
    taught = calls[1:]
    assert len(taught) == 2 + 2 + 1, "two pruning rounds, two control rounds, centroid fine-tuning"
    for call in taught:
        assert call["distill_weight"] == 0.5 and call["distill_temperature"] == 3.0
        for name, value in call["teacher"].state_dict().items():
            assert torch.equal(value, baseline[name]), name


def test_a_dense_control_taught_only_by_its_baseline_stays_the_baseline(loaders, tmp_path):
    # the known answer: student = teacher at the start, so the soft term has no gradient, and
    # without weight decay nothing moves the weights
    train, val, test = loaders
    settings = pipeline.settings_for("ci", "lenet5", epochs=1, prune_rounds=2, retrain_epochs=1,
                                     distill_weight=1.0, weight_decay=0.0)
    cpu = torch.device("cpu")
    pipeline.train_baseline(models.create("lenet5", CLASSES, 3, 32), train, val, settings, tmp_path, device=cpu)
    model = models.create("lenet5", CLASSES, 3, 32)
    pipeline.dense_control(model, train, val, settings, tmp_path, device=cpu)
    baseline = torch.load(tmp_path / "baseline.pt", weights_only=True)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, baseline[name], rtol=0, atol=1e-6, msg=name)


def _pruned_until_plan(loaders, out, **overrides):
    train, val, test = loaders
    settings = pipeline.settings_for("ci", "lenet5", epochs=1, prune_rounds=2, retrain_epochs=1, **overrides)
    cpu = torch.device("cpu")
    pipeline.train_baseline(models.create("lenet5", CLASSES, 3, 32), train, val, settings, out, device=cpu)
    pipeline.plan_pruning(models.create("lenet5", CLASSES, 3, 32), val, settings, out, device=cpu)
    return settings


def test_a_refused_plan_leaves_the_folder_as_it_was(loaders, tmp_path):
    """Rerunning notebook 03 with another budget after rounds were done must not rewrite the plan
    that notebook 04's rounds resume from (issue: round 3 pruned to 5 % instead of 9.5 %)."""
    train, val, _ = loaders
    out, cpu = tmp_path / "run", torch.device("cpu")
    settings = _pruned_until_plan(loaders, out)
    pipeline.prune_and_retrain(models.create("lenet5", CLASSES, 3, 32), train, val, settings, out, device=cpu)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    other = {**settings, "target_kept": settings["target_kept"] / 3}
    with pytest.raises(pipeline.StaleRunError, match=r"'pruned' stage made with other settings.*target_kept="):
        pipeline.plan_pruning(models.create("lenet5", CLASSES, 3, 32), val, other, out, device=cpu)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # the same settings still recompute the plan (a cheap stage), to the same bytes
    pipeline.plan_pruning(models.create("lenet5", CLASSES, 3, 32), val, settings, out, device=cpu)
    assert (out / "pruning_plan.json").read_bytes() == before["pruning_plan.json"]


def test_a_downstream_stage_refuses_settings_its_upstream_was_not_made_with(loaders, tmp_path):
    """Notebook 06 with --set epochs=3 in a folder quantized after other epochs: refused, nothing written."""
    train, val, test = loaders
    out, cpu = tmp_path / "run", torch.device("cpu")
    settings = _pruned_until_plan(loaders, out)
    model = models.create("lenet5", CLASSES, 3, 32)
    pipeline.prune_and_retrain(model, train, val, settings, out, device=cpu)
    pipeline.quantize(model, train, val, settings, out, device=cpu)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for change, said in (({"epochs": 3}, "'baseline' stage made with other settings (epochs=1 there, 3 now)"),
                         ({"fc_bits": 2}, "'quantized' stage made with other settings (fc_bits=5 there, 2 now)")):
        with pytest.raises(pipeline.StaleRunError, match=re.escape(said)):
            pipeline.encode(models.create("lenet5", CLASSES, 3, 32), {**settings, **change}, out, device=cpu)
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    result = pipeline.encode(models.create("lenet5", CLASSES, 3, 32), settings, out, device=cpu)
    assert Path(result["file"]).is_file()


def _paired(images, only_baseline_right, only_candidate_right, candidate_loss=1.0) -> dict:
    """A round's paired counts against the baseline (helpers.prune.stopping), as its record holds them."""
    return {"images": images, "both_right": images // 2, "only_baseline_right": only_baseline_right,
            "only_candidate_right": only_candidate_right, "baseline_loss": 1.0, "candidate_loss": candidate_loss}


def test_extra_rounds_prune_past_the_plan_while_validation_allows(loaders, tmp_path):
    train, val, test = loaders
    settings = _pruned_until_plan(loaders, tmp_path, extra_rounds=2, extra_keep=0.5, stop_tolerance=0.99)
    model = models.create("lenet5", CLASSES, 3, 32)
    record = pipeline.prune_and_retrain(model, train, val, settings, tmp_path, test_loader=test,
                                        device=torch.device("cpu"))
    kept = [r["kept"] for r in record["rounds"]]
    assert len(kept) == 4 and [r.get("accepted") for r in record["rounds"][2:]] == [True, True]
    assert kept[3] == pytest.approx(kept[1] * 0.25, rel=0.05), "each extra round halves the pruned layers"
    assert record["kept_fraction"] <= kept[3] and record["dead_units"]["outputs_equal"], \
        "then only the inputs of units nothing reads go"


def test_a_round_that_validation_does_not_allow_is_undone_and_ends_pruning(loaders, tmp_path, monkeypatch):
    train, val, test = loaders
    settings = _pruned_until_plan(loaders, tmp_path, extra_rounds=3, extra_keep=0.5, stop_tolerance=0.0,
                                  remove_dead_units=False)
    real_round = prune_stages._one_round
    # the paired comparison with the baseline after retraining, per round: round 4 loses 40 of 100 images
    same, worse = _paired(100, 0, 0), _paired(100, 40, 0)
    scripted = {1: same, 2: same, 3: same, 4: worse}

    def round_with_scripted_validation(model, r, *args, **kwargs):
        return {**real_round(model, r, *args, **kwargs), "vs_baseline": scripted[r]}

    monkeypatch.setattr(prune_stages, "_one_round", round_with_scripted_validation)
    model = models.create("lenet5", CLASSES, 3, 32)
    record = pipeline.prune_and_retrain(model, train, val, settings, tmp_path, test_loader=test,
                                        device=torch.device("cpu"))
    assert [r.get("accepted") for r in record["rounds"]] == [None, None, True, False], "round 5 never ran"
    refused = record["rounds"][3]["decision"]
    assert refused["difference"] == pytest.approx(-0.4) and refused["mcnemar_p"] < 1e-6, "the evidence is recorded"
    assert record["rounds"][1]["decision"]["accepted"], "the last planned round's decision too"
    round3 = models.create("lenet5", CLASSES, 3, 32)
    from helpers.prune import pruning
    pruning.load_pruned_state_dict(round3, torch.load(tmp_path / "pruned_round3.pt", weights_only=True))
    assert record["kept_fraction"] == pytest.approx(pruning.total_kept_fraction(round3))
    assert record["kept_fraction"] > record["rounds"][3]["kept"], "the rejected round's pruning is undone"
    saved = torch.load(tmp_path / "pruned.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in round3.state_dict().items())


def test_rounds_recorded_before_the_paired_counts_resume_to_the_same_decisions(loaders, tmp_path):
    train, val, test = loaders
    settings = _pruned_until_plan(loaders, tmp_path, extra_rounds=2, extra_keep=0.5, stop_tolerance=0.0, stop_z=1.0)
    cpu = torch.device("cpu")
    first = pipeline.prune_and_retrain(models.create("lenet5", CLASSES, 3, 32), train, val, settings, tmp_path,
                                       test_loader=test, device=cpu)
    decisions = [r.get("decision") for r in first["rounds"]]
    assert decisions[1] is not None and decisions[1]["z"] == 1.0 and decisions[1]["counts"]["images"] == len(val.dataset)
    assert all(r["threads"] == torch.get_num_threads() for r in first["rounds"])
    # an older version's rounds: no paired counts in their records, and the stage not finished
    (tmp_path / "pruned.pt").unlink()
    for path in tmp_path.glob("pruned_round*.json"):
        path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "vs_baseline"}))
    again = pipeline.prune_and_retrain(models.create("lenet5", CLASSES, 3, 32), train, val, settings, tmp_path,
                                       test_loader=test, device=cpu)
    assert [r.get("decision") for r in again["rounds"]] == decisions


def test_greedy_bit_allocation_narrows_layers_and_the_file_keeps_the_widths(loaders, tmp_path):
    train, val, test = loaders
    settings = _pruned_until_plan(loaders, tmp_path, bit_allocation="greedy", bits_tolerance=0.5, min_bits=3)
    cpu = torch.device("cpu")
    pipeline.prune_and_retrain(models.create("lenet5", CLASSES, 3, 32), train, val, settings, tmp_path, device=cpu)
    model = models.create("lenet5", CLASSES, 3, 32)
    record = pipeline.quantize(model, train, val, settings, tmp_path, test_loader=test, device=cpu)
    widths = record["bits"]
    assert record["bit_trials"][0]["layer"] is None and len(record["bit_trials"]) > 1
    assert all(3 <= widths[n] <= (8 if n.startswith("features") else 5) for n in widths)
    fixed = bit_allocation.default_bits(models.create("lenet5", CLASSES, 3, 32), 8, 5)
    assert set(widths) == set(fixed) and widths != fixed, "half the accuracy allowed and nothing narrowed"
    pipeline.encode(model, settings, tmp_path, test_loader=test, device=cpu)
    distinct = quantization.distinct_values(load_compressed(tmp_path / "lenet5.dcz"))
    assert all(distinct[n] <= 2 ** widths[n] for n in widths)


def test_a_folder_recorded_before_a_setting_existed_resumes_when_that_setting_is_at_its_default(loaders, tmp_path):
    train, val, test = loaders
    settings = _pruned_until_plan(loaders, tmp_path)
    cpu = torch.device("cpu")
    first = pipeline.prune_and_retrain(models.create("lenet5", CLASSES, 3, 32), train, val, settings, tmp_path,
                                       device=cpu)
    record_path = tmp_path / "pruned.settings.json"
    older = {k: v for k, v in json.loads(record_path.read_text()).items()
             if k not in ("extra_rounds", "extra_keep", "stop_tolerance")}
    record_path.write_text(json.dumps(older))
    again = pipeline.prune_and_retrain(models.create("lenet5", CLASSES, 3, 32), train, val, settings, tmp_path,
                                       device=cpu)
    assert again == first
    with pytest.raises(pipeline.StaleRunError, match="extra_rounds=0 there, 2 now"):
        pipeline.prune_and_retrain(models.create("lenet5", CLASSES, 3, 32), train, val,
                                   {**settings, "extra_rounds": 2}, tmp_path, device=cpu)


def test_the_loss_rule_stops_a_round_whose_accuracy_alone_would_pass(loaders, tmp_path, monkeypatch):
    train, val, test = loaders
    settings = _pruned_until_plan(loaders, tmp_path, extra_rounds=3, extra_keep=0.5, stop_tolerance=0.99,
                                  stop_loss_tolerance=0.05, remove_dead_units=False)
    real_round = prune_stages._one_round
    losses = {1: 1.0, 2: 1.0, 3: 1.0, 4: 1e9}  # validation loss after retraining, per round (baseline: 1.0)

    def round_with_scripted_loss(model, r, *args, **kwargs):
        return {**real_round(model, r, *args, **kwargs), "vs_baseline": _paired(100, 0, 0, candidate_loss=losses[r])}

    monkeypatch.setattr(prune_stages, "_one_round", round_with_scripted_loss)
    record = pipeline.prune_and_retrain(models.create("lenet5", CLASSES, 3, 32), train, val, settings, tmp_path,
                                        test_loader=test, device=torch.device("cpu"))
    assert [r.get("accepted") for r in record["rounds"]] == [None, None, True, False]
    assert record["baseline_val_loss"] > 0


# ----------------------------------------------------------------------------- issue 24: compress on bad input
def _tensor_loader(n=32, features=64, classes=3, batch=16):
    gen = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(n, features, generator=gen), torch.randint(classes, (n,), generator=gen)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs, ys), batch_size=batch)


@pytest.fixture
def no_training(monkeypatch):
    """compress must refuse before its first epoch: any training fails the test."""
    from helpers import training

    def refuse(*args, **kwargs):
        raise AssertionError("trained before refusing")
    monkeypatch.setattr(training, "fit", refuse)


def test_an_empty_loader_is_refused_before_any_work(tmp_path, no_training):
    empty, full = _tensor_loader(n=0), _tensor_loader()
    for train, val, name in ((empty, full, "train_loader"), (full, empty, "val_loader")):
        with pytest.raises(ValueError, match=f"{name} has no batches"):
            pipeline.compress(nn.Linear(64, 3), train, val, tmp_path / "out", **CI)
    with pytest.raises(ValueError, match="test_loader has no batches"):
        pipeline.compress(nn.Linear(64, 3), full, full, tmp_path / "out", test_loader=empty, **CI)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("metadata, problem", [
    ({"class_names": "0123456789"}, "'class_names' must be a non-empty list of strings"),
    ({"mean": [0.5, 0.5]}, "'mean' must be a list of 1 or 3 finite numbers"),
    ({"image_size": 10000}, "'image_size' missing or out of range"),
    ({"mean": [float("nan")]}, r"metadata\['mean'\] cannot be stored \(Out of range float"),
    ({"std": torch.tensor([0.5])}, r"metadata\['std'\] cannot be stored .*a tensor: .tolist\(\)"),
    ("mean=0.5", "metadata must be a dict")])
def test_bad_metadata_is_refused_before_the_first_epoch(tmp_path, no_training, metadata, problem):
    loader = _tensor_loader()
    with pytest.raises(ValueError, match=problem):
        pipeline.compress(nn.Linear(64, 3), loader, loader, tmp_path / "out", metadata=metadata, **CI)
    assert not (tmp_path / "out").exists(), "no unreadable file is left behind"


def test_a_model_with_no_layer_large_enough_to_prune_compresses(tmp_path):
    from helpers.prune import sensitivity

    assert sensitivity.kept_share({}, {}) == 1.0
    loader = _tensor_loader()
    model = nn.Sequential(nn.Linear(64, 3))  # 192 weights: under MIN_PRUNABLE_WEIGHTS, kept whole
    result = pipeline.compress(model, loader, loader, tmp_path / "tiny", test_loader=loader,
                               metadata={"mean": [0.0]}, **CI)
    assert result["stages"]["pruned"]["kept_fraction"] == 1.0
    reloaded = load_compressed(result["file"], model=nn.Sequential(nn.Linear(64, 3)))
    x = next(iter(loader))[0]
    assert torch.equal(reloaded(x), model.cpu()(x)) and reloaded.metadata == {"mean": [0.0]}


class _Aliased(nn.Module):
    def __init__(self, tie_weights=False):
        super().__init__()
        self.a = nn.Linear(64, 64)
        self.head = nn.Linear(64, 3)
        if tie_weights:
            self.b = nn.Linear(64, 64)
            self.b.weight = self.a.weight
        else:
            self.b = self.a  # one module, two names

    def forward(self, x):
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))))


def test_a_module_under_two_names_is_refused_before_any_work(tmp_path, no_training):
    loader = _tensor_loader()
    with pytest.raises(ValueError, match="registered as both 'a' and 'b'.*Register it once"):
        pipeline.compress(_Aliased(), loader, loader, tmp_path / "out", **CI)


def test_tied_weights_are_refused_before_any_work(tmp_path, no_training):
    loader = _tensor_loader()
    with pytest.raises(ValueError, match=r"'b.weight' is the same tensor as 'a.weight' \(tied weights\)"):
        pipeline.compress(_Aliased(tie_weights=True), loader, loader, tmp_path / "out", **CI)


def test_a_second_compress_on_a_busy_out_dir_is_refused(tmp_path, no_training):
    from helpers.pipeline.lock import RunFolderBusy, RunLock

    loader = _tensor_loader()
    with RunLock(tmp_path / "out"):  # another compress (or the runner) holds the folder
        with pytest.raises(RunFolderBusy, match=f"in use by another runner: process {os.getpid()}.*another out_dir"):
            pipeline.compress(nn.Linear(64, 3), loader, loader, tmp_path / "out", **CI)
    assert [p.name for p in (tmp_path / "out").iterdir()] == [".runner.lock"]
