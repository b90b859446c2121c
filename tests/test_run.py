import json
import subprocess
import sys

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_runner_writes_metrics_in_the_documented_shape(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "helpers.run", "--dataset", "digits", "--model", "lenet300",
                           "--profile", "ci", "--notebooks", "01", "02", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads((out / "lenet300" / "metrics.json").read_text())
    assert {k: metrics[k] for k in ("dataset", "model", "profile")} == \
        {"dataset": "digits", "model": "lenet300", "profile": "ci"}
    baseline = metrics["stages"]["baseline"]
    assert set(baseline) >= {"test_accuracy", "test_top5", "size_bytes", "params"}
    assert 0 <= baseline["test_accuracy"] <= baseline["test_top5"] <= 1
    assert baseline["size_bytes"] == 4 * baseline["params"]
    assert (out / "lenet300" / "02_baseline_training.ipynb").exists()
    assert (out / "01_data_exploration.ipynb").exists()


def test_runner_rejects_a_missing_data_dir(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "helpers.run", "--data-dir", str(tmp_path / "nope"),
                           "--profile", "ci", "--out", str(tmp_path / "r")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
