"""The zoo: every shipped file loads and matches its manifest entry; adding a run's file; the checks."""

import json
import os
from pathlib import Path

import pytest
import torch

from helpers import data, evaluate, models, zoo
from helpers.coding import fileformat
from helpers.prune import pruning
from helpers.quantize import quantization


def test_every_zoo_entry_loads_and_matches_its_manifest():
    entries = zoo.read_manifest()
    assert entries, "zoo/manifest.json lists no file"
    assert zoo.check() == []
    for entry in entries:
        assert set(zoo.KEYS) <= set(entry)
        assert entry["fp32_bytes"] / entry["file_bytes"] > 1 and 0 < entry["test_accuracy"] <= 1
        assert entry["command"].startswith("python -m helpers.run") and len(entry["commit"]) == 40


@pytest.mark.skipif(not os.environ.get("DC_DATA_DIR"), reason="needs the Sea Animals images ($DC_DATA_DIR)")
def test_zoo_accuracies_are_what_the_files_score():
    """Evaluated again from each file on the test split it was measured on (the same data, split and seed)."""
    for entry in zoo.read_manifest():
        if entry["dataset"] != "sea-animals":
            continue
        result = evaluate.evaluate_file(zoo.ZOO_DIR / entry["file"], "sea-animals", os.environ["DC_DATA_DIR"])
        assert result["test_accuracy"] == pytest.approx(entry["test_accuracy"], abs=1e-9), entry["file"]


def _finished_run(tmp_path) -> Path:
    """A model folder as a finished run leaves it: metrics.json and the compressed file."""
    torch.manual_seed(0)
    model = models.create("lenet300", 10, 1, 8)
    pruning.prune_to_sparsity(model, 0.8)
    quantization.quantize_model(model, fc_bits=5)
    splits = data.load_splits("digits", image_size=8)
    run = tmp_path / "runs" / "digits-demo" / "lenet300"
    run.mkdir(parents=True)
    fileformat.save_model(model, run / "lenet300.dcz", {"class_names": splits.class_names, "image_size": 8,
                                                        "mean": list(splits.mean), "std": list(splits.std)})
    stages = {"baseline": {"image_size": 8, "size_bytes": models.dense_size_bytes(model), "test_accuracy": 0.9},
              "compressed": {"test_accuracy": 0.875, "file": "/elsewhere/lenet300.dcz"}}
    (run / "metrics.json").write_text(json.dumps({"dataset": "digits", "model": "lenet300", "stages": stages}))
    return run


def test_add_copies_the_file_and_check_finds_what_is_wrong(tmp_path):
    run, where = _finished_run(tmp_path), tmp_path / "zoo"
    entry = zoo.add(run, "a" * 40, "python -m helpers.run --dataset digits", where)
    assert entry["file"] == "lenet300-digits.dcz" and entry["test_accuracy"] == 0.875
    assert entry["file_bytes"] == (where / entry["file"]).stat().st_size == (run / "lenet300.dcz").stat().st_size
    assert zoo.check(where) == []
    zoo.add(run, "b" * 40, "python -m helpers.run --dataset digits", where)  # the same file again: replaced
    assert [e["commit"][0] for e in zoo.read_manifest(where)] == ["b"]

    manifest = zoo.read_manifest(where)
    manifest[0].update(model="lenet5", file_bytes=1, image_size=28)
    (where / zoo.MANIFEST).write_text(json.dumps(manifest))
    problems = " | ".join(zoo.check(where))
    assert "the manifest says 1" in problems and "holds lenet300" in problems and "28" in problems
    (where / "lenet300-digits.dcz").write_bytes(b"broken")
    assert "does not load" in " ".join(zoo.check(where))
    (where / "lenet300-digits.dcz").unlink()
    assert "no such file" in " ".join(zoo.check(where))
    assert zoo.main(["check", "--zoo", str(where)]) == 1


def test_add_refuses_an_unfinished_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        zoo.add(tmp_path, "c" * 40, "x", tmp_path / "zoo")
    (tmp_path / "metrics.json").write_text(json.dumps({"dataset": "d", "model": "m", "stages": {"baseline": {}}}))
    with pytest.raises(ValueError, match="notebook 06 has not finished"):
        zoo.add(tmp_path, "c" * 40, "x", tmp_path / "zoo")


def _recorded(run: Path, stage_commits: dict, rounds: dict = (), trained: list = ()) -> Path:
    """``run`` with the given commit in each stage record, round record and training start."""
    metrics = json.loads((run / "metrics.json").read_text())
    for stage, code in stage_commits.items():
        metrics["stages"][stage]["code"] = code
    (run / "metrics.json").write_text(json.dumps(metrics))
    for name, code in dict(rounds).items():
        (run / f"{name}.json").write_text(json.dumps({"round": 1, "code": code}))
    (run / "provenance.json").write_text(json.dumps([{"stage": "baseline", "time": "t", **c} for c in trained]))
    return run


def test_add_refuses_a_run_whose_records_name_another_commit_or_changed_files(tmp_path):
    at = lambda commit, dirty=False: {"commit": commit, "dirty": dirty}
    run = _recorded(_finished_run(tmp_path), {"baseline": at("a" * 40), "compressed": at("a" * 40)},
                    {"pruned_round1": at("a" * 40)}, [at("a" * 40)])
    assert zoo.add(run, "a" * 40, "python -m helpers.run", tmp_path / "zoo")["commit"] == "a" * 40
    assert zoo.add(run, "aaaaaaa", "python -m helpers.run", tmp_path / "zoo")  # a short hash of the same commit
    cases = [({"baseline": at("b" * 40)}, {}, [], "made at commit bbbbbbbbbbbb, not aaaaaaaaaaaa: stage baseline"),
             ({}, {"pruned_round2": at("b" * 40)}, [], "pruned_round2"),
             ({}, {}, [at("a" * 40), at("b" * 40)], "training of baseline started t"),
             ({"compressed": at("a" * 40, dirty=True)}, {}, [], "tracked files changed"),
             ({"compressed": at(None, None)}, {}, [], "outside a git checkout")]
    for stages, rounds, trained, message in cases:
        run = _recorded(_finished_run(tmp_path / message[:8].replace(" ", "_")), {"baseline": at("a" * 40),
                        "compressed": at("a" * 40), **stages}, rounds, trained or [at("a" * 40)])
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            zoo.add(run, "a" * 40, "python -m helpers.run", tmp_path / "zoo-refused")
        assert not (tmp_path / "zoo-refused" / "lenet300-digits.dcz").exists(), "nothing is copied"
    assert zoo.main(["add", str(run), "--commit", "a" * 40, "--command", "x", "--zoo", str(tmp_path / "z")]) == 2
    with pytest.raises(ValueError, match="commit hash"):
        zoo.add(run, "main", "python -m helpers.run", tmp_path / "zoo")
