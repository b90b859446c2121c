import json
import subprocess
import sys

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_runner_writes_metrics_in_the_documented_shape(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "helpers.run", "--dataset", "digits", "--model", "lenet300",
                           "--profile", "ci", "--notebooks", "01", "02", "--out", str(out),
                           "--set", "batch_size=8"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads((out / "lenet300" / "metrics.json").read_text())
    assert {k: metrics[k] for k in ("dataset", "model", "profile")} == \
        {"dataset": "digits", "model": "lenet300", "profile": "ci"}
    baseline = metrics["stages"]["baseline"]
    assert set(baseline) >= {"test_accuracy", "test_top5", "size_bytes", "params"}
    assert 0 <= baseline["test_accuracy"] <= baseline["test_top5"] <= 1
    assert baseline["size_bytes"] == 4 * baseline["params"]
    assert baseline["overrides"] == {"batch_size": 8}
    assert set(json.loads((out / "runner.json").read_text())["timings_s"]) == \
        {"01_data_exploration", "lenet300/02_baseline_training"}
    assert (out / "lenet300" / "02_baseline_training.ipynb").exists()
    assert (out / "01_data_exploration.ipynb").exists()


def test_runner_rejects_a_missing_data_dir(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "helpers.run", "--data-dir", str(tmp_path / "nope"),
                           "--profile", "ci", "--out", str(tmp_path / "r")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_runner_rejects_unknown_or_malformed_overrides(tmp_path):
    for item, message in [("retrain_epoch=3", "expected FIELD=VALUE"), ("epochs=ten", "must be JSON"),
                          ("epochs", "expected FIELD=VALUE")]:
        proc = subprocess.run([sys.executable, "-m", "helpers.run", "--profile", "ci", "--set", item,
                               "--out", str(tmp_path / "r")], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, (item, proc.stderr)


def test_overrides_change_one_model_or_all_fields(tmp_path, monkeypatch):
    import pytest

    from helpers import config

    monkeypatch.delenv("DC_OVERRIDES", raising=False)
    base = config.resolve_settings("sea-animals", "", "lenet5", "cpu", tmp_path, 0)
    changed = config.resolve_settings("sea-animals", "", "lenet5", "cpu", tmp_path, 0,
                                      {"retrain_epochs": 15, "fc_bits": 4, "epochs": {"alexnet": 1}})
    assert (changed["retrain_epochs"], changed["fc_bits"], changed["epochs"]) == (15, 4, base["epochs"])
    assert changed["overrides"] == {"retrain_epochs": 15, "fc_bits": 4, "epochs": {"alexnet": 1}}
    assert config.resolve_settings("sea-animals", "", "alexnet", "cpu", tmp_path, 0, {"epochs": {"alexnet": 1}})["epochs"] == 1
    monkeypatch.setenv("DC_OVERRIDES", '{"quant_epochs": 3}')
    assert config.resolve_settings("sea-animals", "", "lenet5", "cpu", tmp_path, 0)["quant_epochs"] == 3
    monkeypatch.setenv("DC_OVERRIDES", "{quant_epochs: 3}")
    with pytest.raises(ValueError, match="DC_OVERRIDES is not valid JSON"):
        config.resolve_settings("sea-animals", "", "lenet5", "cpu", tmp_path, 0)
    with pytest.raises(ValueError, match="Unknown profile field"):
        config.resolve_settings("sea-animals", "", "lenet5", "cpu", tmp_path, 0, {"name": "gpu"})
    monkeypatch.delenv("DC_OVERRIDES")
    assert config.resolve_settings("sea-animals", "", "vgg16", "cpu", tmp_path, 0,
                                   {"eval_batches": 2, "budget_allocation": "tolerance"})["eval_batches"] == 2
    with pytest.raises(ValueError, match="budget_allocation = 'greedy' .* one of 'tolerance', 'cost_per_weight'"):
        config.resolve_settings("sea-animals", "", "lenet5", "cpu", tmp_path, 0, {"budget_allocation": "greedy"})
