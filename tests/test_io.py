"""Atomic writes' leftovers and missing stage outputs (helpers.io)."""

import pytest

from helpers import io


def test_stale_temp_files_of_killed_writes_are_removed_and_nothing_else(tmp_path):
    (tmp_path / "lenet5").mkdir()
    stale = [tmp_path / "lenet5" / ".metrics.json.ab12_x9z.tmp", tmp_path / ".split.json.q1w2e3r4.tmp"]
    kept = [tmp_path / ".notes.tmp", tmp_path / "model.tmp", tmp_path / "lenet5" / ".hidden"]
    for path in stale + kept:
        path.write_text("x")
    io.atomic_write_text(tmp_path / "lenet5" / "metrics.json", "{}")
    assert io.remove_stale_temp_files(tmp_path) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)
    assert (tmp_path / "lenet5" / "metrics.json").read_text() == "{}"


def test_a_missing_stage_output_says_which_notebook_to_run_first(tmp_path):
    with pytest.raises(io.MissingStageOutput, match="notebook 02_baseline_training writes it.*Run notebook 02 first"):
        io.require_output(tmp_path / "baseline.pt", "02_baseline_training")
    (tmp_path / "baseline.pt").write_bytes(b"x")
    assert io.require_output(tmp_path / "baseline.pt", "02_baseline_training") == tmp_path / "baseline.pt"
    assert issubclass(io.MissingStageOutput, FileNotFoundError)
