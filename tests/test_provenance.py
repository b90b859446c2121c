"""helpers.pipeline.provenance: the commit recorded with a run folder's results, and where it is read."""

import json
import subprocess

import pytest
import torch

from helpers.pipeline import provenance, stage_common


def _git(folder, *args):
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path):
    """A git checkout with one commit and a tracked file."""
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("one")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    return tmp_path


def test_code_version_names_the_commit_and_whether_tracked_files_changed(checkout):
    head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert provenance.code_version(checkout) == {"commit": head, "dirty": False}
    (checkout / "untracked.txt").write_text("runs/ and the like do not count")
    assert provenance.code_version(checkout)["dirty"] is False
    (checkout / "a.txt").write_text("two")
    assert provenance.code_version(checkout) == {"commit": head, "dirty": True}


def test_code_version_is_unknown_outside_the_top_of_a_checkout(checkout, tmp_path_factory):
    (checkout / "venv" / "site-packages").mkdir(parents=True)  # a wheel installed in a venv inside some repo
    assert provenance.code_version(checkout / "venv" / "site-packages") == {"commit": None, "dirty": None}
    assert provenance.code_version(tmp_path_factory.mktemp("plain")) == {"commit": None, "dirty": None}


def test_this_checkouts_version_is_what_git_says():
    version = provenance.code_version()
    if version["commit"] is not None:  # tests run from a git checkout of the repository
        assert len(version["commit"]) == 40 and isinstance(version["dirty"], bool)


def test_training_in_a_run_folder_notes_the_code_and_stage_records_carry_it(tmp_path, monkeypatch):
    version = {"commit": "c" * 40, "dirty": False}
    monkeypatch.setattr(provenance, "code_version", lambda root=None: dict(version))
    model = torch.nn.Linear(4, 2)
    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    settings = {"seed": 0, "model_name": "m", "dataset": "d", "profile": "p"}
    stage_common._fit(model, batches, batches, 1, "cpu", settings, "baseline", lr=0.1,
                      checkpoint=tmp_path / "baseline_checkpoint.pt")
    version["commit"] = "d" * 40  # the stage is resumed and finished by newer code
    stage_common._fit(model, batches, batches, 2, "cpu", settings, "baseline", lr=0.1,
                      checkpoint=tmp_path / "baseline_checkpoint.pt")
    stage_common._save_record(tmp_path, "baseline", {"test_accuracy": 0.5}, settings)
    entries = json.loads((tmp_path / provenance.PROVENANCE).read_text())
    assert [e["commit"][0] for e in entries] == ["c", "d"] and entries[0]["stage"] == "baseline"
    assert json.loads((tmp_path / "metrics.json").read_text())["stages"]["baseline"]["code"]["commit"] == "d" * 40
    found = provenance.commits_of(tmp_path)
    assert set(found["commits"]) == {"c" * 40, "d" * 40} and found["unrecorded"] == []
    assert any("made at commit cccccccccccc" in p for p in provenance.problems(tmp_path, "d" * 40))


def test_one_phrase_for_each_kind_of_folder(tmp_path):
    write = lambda codes: (tmp_path / provenance.PROVENANCE).write_text(json.dumps(
        [{"stage": "baseline", "commit": c, "dirty": d} for c, d in codes]))
    assert provenance.in_one_phrase(tmp_path).startswith("no record names its commit")
    write([(None, None), (None, None)])
    assert provenance.in_one_phrase(tmp_path).startswith("made by an installed copy of the package")
    write([("a" * 40, False), ("a" * 40, False)])
    assert provenance.in_one_phrase(tmp_path) == "every record made at commit aaaaaaaaaaaa"
    write([("a" * 40, False), (None, None)])
    assert "records from commits unknown, aaaaaaaaaaaa: not one run" in provenance.in_one_phrase(tmp_path)


def test_records_older_than_provenance_are_counted_not_guessed(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"stages": {"baseline": {"test_accuracy": 0.5}}}))
    (tmp_path / "pruned_round1.json").write_text(json.dumps({"round": 1}))
    found = provenance.commits_of(tmp_path)
    assert found == {"commits": {}, "dirty": [], "unrecorded": ["stage baseline", "pruned_round1"]}
    assert provenance.problems(tmp_path, "a" * 40) == []
