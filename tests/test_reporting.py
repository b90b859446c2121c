"""Failed models and meaningless results are reported, not silently left out (helpers.reporting, notebook 07)."""

import json

from helpers import reporting


def make_run(tmp_path):
    run = tmp_path / "run"
    (run / "lenet300").mkdir(parents=True)
    classes = {str(i): 0.1 for i in range(10)}
    reporting.update_metrics(run / "lenet300", "baseline", {"test_accuracy": 0.1, "size_bytes": 400,
                             "per_class_accuracy": classes}, "digits", "lenet300", "ci")
    reporting.update_metrics(run / "lenet300", "compressed", {"test_accuracy": 0.1, "size_bytes": 10,
                             "compression_ratio": 40.0}, "digits", "lenet300", "ci")
    reporting.write_json(run / "runner.json", {"timings_s": {}, "failures": [], "models": {
        "lenet300": {"status": "ok"},
        "lenet5": {"status": "failed", "step": "lenet5/02_baseline_training", "error": "RuntimeError",
                   "message": "Calculated padded input size per channel: (4 x 4).\nUse 16 px.",
                   "notebook": str(run / "lenet5" / "02_baseline_training.ipynb")}}})
    return run


def test_status_lines_name_failed_models_and_results_at_chance(tmp_path):
    lines = reporting.status_lines(make_run(tmp_path))
    assert any(line.startswith("lenet5: FAILED in lenet5/02_baseline_training: RuntimeError") and "Use 16 px." in line
               and "02_baseline_training.ipynb" in line for line in lines)
    assert any(line.startswith("lenet300: compressed top-1 10.0% is at chance level") for line in lines)
    assert any("no pruned, quantized stage yet" in line for line in lines)


def test_good_results_raise_no_warning(tmp_path):
    stages = {s: {"test_accuracy": 0.95} for s in ("pruned", "quantized", "compressed")}
    stages["baseline"] = {"test_accuracy": 0.96, "per_class_accuracy": {str(i): 0.9 for i in range(10)}}
    assert reporting.result_warnings({"stages": stages}) == []
    assert reporting.run_failures(tmp_path) == {}
    (tmp_path / "runner.json").write_text("{not json")
    assert reporting.run_failures(tmp_path) == {}


def test_the_reporting_command_prints_the_failures(tmp_path, capsys):
    run = make_run(tmp_path)
    assert reporting.main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "| lenet300 | baseline |" in out and "lenet5: FAILED" in out and "at chance level" in out
    json.loads((run / "runner.json").read_text())
    assert "lenet300: no record names its commit" in out
    (run / "lenet300" / "provenance.json").write_text(json.dumps([{"stage": "baseline", "commit": "e" * 40,
                                                                    "dirty": False}]))
    assert reporting.main([str(run)]) == 0
    assert "lenet300: records made at commit eeeeeeeeeeee;" in capsys.readouterr().out
