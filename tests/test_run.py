import json
import os
import subprocess
import sys

import pytest

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

    from helpers.pipeline import config

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


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "helpers.run", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_every_bad_set_is_refused_before_any_notebook_runs(tmp_path):
    out = tmp_path / "r"
    cases = [(["epochs=-1", "per_class=5", "target_kept=0", 'budget_allocation="magic"', "fc_bits=0"],
              ["epochs = -1", "per_class = 5", "target_kept = 0", "budget_allocation", "fc_bits = 0"]),
             (['epochs={"lenet-5": 3}', "batch_size=0", "prune_rounds=0"],
              ["['lenet-5'] name no model", "batch_size = 0", "prune_rounds = 0"]),
             (['epochs="3"'], ["'3' (a string)"]), (["epochs=1.5"], ["1.5 (a float)"])]
    for items, messages in cases:
        proc = run_cli("--dataset", "digits", "--model", "lenet300", "lenet5", "--profile", "ci", "--set", *items,
                       "--out", str(out))
        assert proc.returncode == 2 and all(m in proc.stderr for m in messages), (items, proc.stderr)
        assert "Traceback" not in proc.stderr and not out.exists(), items


def test_a_bad_seed_is_refused_before_any_notebook_runs(tmp_path):
    out = tmp_path / "r"
    for seed in ("-1", "99999999999999999999"):
        proc = run_cli("--dataset", "digits", "--model", "lenet300", "--profile", "ci", "--seed", seed, "--out", str(out))
        assert proc.returncode == 2 and f"seed = {seed}" in proc.stderr and "from 0 to 4294967295" in proc.stderr
        assert "Traceback" not in proc.stderr and not out.exists()


def test_an_explicit_image_size_is_honoured_or_refused_never_changed():
    from helpers.pipeline import config

    assert config.settings_for("demo", "lenet300", "digits", {"image_size": 32})["image_size"] == 32
    assert config.settings_for("demo", "lenet300", "digits", {})["image_size"] == 8  # the native size
    assert config.settings_for("demo", "lenet5", "digits", {})["image_size"] == 16  # lenet5's smallest
    assert config.settings_for("demo", "lenet5", "mnist", {"image_size": {"lenet5": 20}})["image_size"] == 20
    with pytest.raises(config.SettingsError, match="image_size = 4 is too small for lenet5"):
        config.settings_for("demo", "lenet5", "digits", {"image_size": 4})
    proc = run_cli("--dataset", "digits", "--model", "lenet5", "--profile", "ci", "--set", "image_size=4",
                   "--out", "unused")
    assert proc.returncode == 2 and "too small for lenet5" in proc.stderr


def test_out_pointing_at_a_file_is_refused(tmp_path):
    afile = tmp_path / "results.txt"
    afile.write_text("not a folder")
    for out in (afile, afile / "run"):
        proc = run_cli("--dataset", "digits", "--model", "lenet300", "--profile", "ci", "--out", str(out))
        assert proc.returncode == 2 and "is a file, not a folder" in proc.stderr and "Traceback" not in proc.stderr


def test_a_second_runner_on_a_folder_in_use_is_refused_naming_the_holder(tmp_path):
    import os

    from helpers.pipeline.lock import RunLock

    out = tmp_path / "r"
    with RunLock(out):
        proc = run_cli("--dataset", "digits", "--model", "lenet300", "--profile", "ci", "--out", str(out))
    assert proc.returncode == 3, proc.stderr
    assert f"in use by another runner: process {os.getpid()}" in proc.stderr
    assert not (out / "runner.json").exists()


def test_a_lock_left_by_a_killed_runner_is_taken_over(tmp_path):
    import signal

    from helpers.pipeline.lock import RunFolderBusy, RunLock

    out = tmp_path / "r"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from helpers.pipeline.lock import RunLock; "
                               f"RunLock({str(out)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    try:
        try:
            RunLock(out).acquire()
            raise AssertionError("the lock of a live process was taken")
        except RunFolderBusy as exc:
            assert f"process {holder.pid}" in str(exc)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = RunLock(out).acquire()
    assert lock.previous["pid"] == holder.pid
    lock.release()
    assert RunLock(out).acquire().previous is None  # a clean release leaves no stale record


def test_kernel_output_shows_progress_lines_and_logs_everything():
    import io

    from helpers.pipeline import progress
    from helpers.run import KernelOutput

    log, shown = io.StringIO(), []
    out = KernelOutput(log, shown.append)
    out.write("cell output\n" + progress.MARKER + "lenet5 02 baseline  epoch 1/3")
    assert shown == []  # the line is not complete yet
    out.write("  loss 2.3\n 10%|#  \r" + progress.MARKER + "lenet5 03 round 1/2\n")
    assert shown == ["  lenet5 02 baseline  epoch 1/3  loss 2.3", "  lenet5 03 round 1/2"]
    assert "cell output" in log.getvalue() and "10%" in log.getvalue()


def test_a_failure_shows_the_whole_message_the_notebook_and_the_wall_time(tmp_path):
    out = tmp_path / "r"
    (out / "lenet300").mkdir(parents=True)
    (out / "lenet300" / ".metrics.json.abcd1234.tmp").write_text("{")  # left by a killed write
    proc = run_cli("--dataset", "digits", "--model", "lenet300", "--profile", "ci", "--notebooks", "03",
                   "--out", str(out))
    assert proc.returncode == 1
    assert "removed" in proc.stdout and not (out / "lenet300" / ".metrics.json.abcd1234.tmp").exists()
    assert str(out / "lenet300" / "03_pruning.ipynb") in proc.stdout
    assert "IPKernelApp" not in proc.stdout + proc.stderr and (out / "runner.log").exists()
    total = [line for line in proc.stdout.splitlines() if line.startswith("[run] total ")]
    assert total and total[0] != "[run] total 0 s; results in " + str(out)
    failure = json.loads((out / "runner.json").read_text())["failures"][0]
    assert failure["step"] == "lenet300/03_pruning" and failure["notebook"] == str(out / "lenet300" / "03_pruning.ipynb")
    assert failure["message"] in proc.stdout and len(failure["message"]) > 0
    assert json.loads((out / "runner.json").read_text())["models"]["lenet300"]["status"] == "failed"


def test_every_notebook_takes_the_dataset_from_the_environment_when_not_passed(tmp_path, monkeypatch):
    import nbformat

    from helpers.pipeline import config
    from helpers.run import notebooks

    for path in notebooks():
        cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
        namespace = {}
        exec(cell.source, namespace)  # the parameters cell is plain assignments
        assert namespace["dataset"] == "", f"{path.name}: dataset = {namespace['dataset']!r} hides $DC_DATASET"
    monkeypatch.setenv("DC_DATASET", "digits")
    monkeypatch.delenv("DC_OVERRIDES", raising=False)
    assert config.resolve_settings("", "", "lenet5", "ci", tmp_path, 0)["dataset"] == "digits"


def test_an_interrupted_run_says_how_to_resume_and_releases_its_lock(tmp_path):
    import signal
    import time

    from helpers.pipeline.lock import RunLock

    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "helpers.run", "--dataset", "digits", "--model", "lenet300",
                             "--profile", "ci", "--notebooks", "01", "02", "03", "--out", str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # Ctrl-C as a terminal delivers it: a SIGINT ignored by whatever started
                            # pytest (a background job, an earlier test) would be inherited otherwise
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while "02_baseline_training" not in proc.stdout.readline():
        pass
    time.sleep(1.5)  # inside notebook 02's kernel start or training, or 03's (not all done by then)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted; the same command resumes" in stdout
    assert "Traceback" not in stderr, stderr
    RunLock(out).acquire().release()


def test_finished_stages_lose_their_checkpoints_and_unfinished_ones_keep_them(tmp_path):
    from helpers.pipeline.resume import remove_intermediate

    names = ["baseline.pt", "baseline_checkpoint.pt", "pruned.pt", "pruned_round1.pt", "pruned_round2.pt",
             "pruned_round2_checkpoint.pt", "pruned_round1.json", "dense_control_round1.pt",
             "dense_control_round1_checkpoint.pt", "quantized_checkpoint.pt", "metrics.json"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    removed = {p.name for p in remove_intermediate(tmp_path)}
    assert removed == {"baseline_checkpoint.pt", "pruned_round1.pt", "pruned_round2.pt", "pruned_round2_checkpoint.pt"}
    # no dense_control.pt and no quantized.pt: those stages are unfinished and keep what they resume from
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(names) - removed)


def test_the_closing_summary_names_accuracy_size_ratio_the_file_and_next_commands(tmp_path):
    from helpers import run

    model_dir = tmp_path / "lenet5"
    model_dir.mkdir()
    (model_dir / "lenet5.dcz").write_bytes(b"x" * 1000)
    compressed = {"test_accuracy": 0.9712, "size_bytes": 1000, "compression_ratio": 21.5,
                  "file": "/moved/elsewhere/lenet5.dcz"}
    (model_dir / "metrics.json").write_text(json.dumps({"stages": {"compressed": compressed}}))
    lines = "\n".join(run.summary_lines(tmp_path, ["lenet5", "never_ran"], "digits"))
    assert "lenet5: 97.12% test accuracy from its file, 1,000 bytes, 21.5x smaller than fp32: " \
        f"{model_dir / 'lenet5.dcz'}" in lines
    assert "the run folder holds 0.0 MB" in lines and "never_ran" not in lines
    for command in ("dc-predict", "dc-evaluate", "--dataset digits", "dc-report"):
        assert command in lines
    assert run.summary_lines(tmp_path, ["never_ran"], "digits") == []
    assert "lenet5: no record names its commit" in lines
    code = lambda commit, dirty=False: {"commit": commit, "dirty": dirty}
    for codes, says in (([code("a" * 40)], "records made at commit aaaaaaaaaaaa; 1 older ones name no commit"),
                        ([code("a" * 40), code("b" * 40)], "records from commits aaaaaaaaaaaa, bbbbbbbbbbbb: "
                                                           "not one run from scratch"),
                        ([code("a" * 40, True)], "(tracked files changed): not one run from scratch")):
        (model_dir / "provenance.json").write_text(json.dumps([{"stage": "baseline", **c} for c in codes]))
        assert says in "\n".join(run.summary_lines(tmp_path, ["lenet5"], "digits")), says


def test_the_kernels_get_a_sleeping_openmp_wait_policy_unless_one_is_set(tmp_path, monkeypatch):
    # OpenMP reads OMP_WAIT_POLICY when a kernel starts: the runner sets it in the environment the
    # kernels inherit (benchmarks/bench_wait_policy.py measures why), keeps the user's, and restores it
    from helpers import run

    seen = []
    monkeypatch.setattr(run, "execute", lambda *args: seen.append(os.environ.get("OMP_WAIT_POLICY")) or 0.0)
    arguments = ["--dataset", "digits", "--model", "lenet300", "--profile", "ci", "--notebooks", "01"]
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    run.main([*arguments, "--out", str(tmp_path / "a")])
    assert seen == ["PASSIVE"] and "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    run.main([*arguments, "--out", str(tmp_path / "b")])
    assert seen == ["PASSIVE", "ACTIVE"] and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
