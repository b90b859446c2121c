"""benchmarks/seed_spread.py: the spread over seeds, read from run folders' metrics."""

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("seed_spread", Path(__file__).parents[1] / "benchmarks" / "seed_spread.py")
seed_spread = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(seed_spread)


def test_spread_matches_the_statistics_module():
    values = [52.9, 45.4, 49.0]
    result = seed_spread.spread(values)
    assert result["mean"] == pytest.approx(statistics.mean(values))
    assert result["sd"] == pytest.approx(statistics.stdev(values))
    assert (result["min"], result["max"], result["n"]) == (45.4, 52.9, 3)
    assert seed_spread.spread([3.0])["sd"] == 0.0
    with pytest.raises(ValueError, match="no values"):
        seed_spread.spread([])


def _run_folder(root: Path, seed: int, ratio: float, top1: float, finished: bool = True) -> Path:
    run_dir = root / f"spread-seed{seed}"
    (run_dir / "lenet5").mkdir(parents=True)
    stages = {"baseline": {"test_accuracy": 0.45},
              "pruned": {"kept_fraction": 0.05, "rounds": [{"round": 1}, {"round": 3, "accepted": True},
                                                            {"round": 4, "accepted": False}]}}
    if finished:
        stages["compressed"] = {"compression_ratio": ratio, "test_accuracy": top1}
    (run_dir / "lenet5" / "metrics.json").write_text(json.dumps({"model": "lenet5", "stages": stages}))
    return run_dir


def test_collect_reads_each_finished_seed_and_leaves_out_unfinished_ones(tmp_path):
    dirs = {0: _run_folder(tmp_path, 0, 50.0, 0.44), 1: _run_folder(tmp_path, 1, 46.0, 0.46),
            2: _run_folder(tmp_path, 2, 0.0, 0.0, finished=False)}
    summary = seed_spread.collect(dirs)["lenet5"]
    assert sorted(summary["seeds"]) == [0, 1]
    assert summary["spread"]["ratio"]["mean"] == pytest.approx(48.0)
    assert summary["spread"]["file_minus_baseline"]["mean"] == pytest.approx(0.0)
    assert summary["spread"]["extra_rounds_accepted"]["max"] == 1
    table = seed_spread.markdown({"lenet5": summary})
    assert "| lenet5 | 0, 1 | 48.0× ± 2.8 (46.0–50.0) |" in table
    assert summary["commits"] == {0: [], 1: []} and "no record names its commit" in table
    for seed, commit in ((0, "a" * 40), (1, "b" * 40)):
        (dirs[seed] / "lenet5" / "provenance.json").write_text(json.dumps([{"stage": "baseline", "commit": commit}]))
    summary = seed_spread.collect(dirs)["lenet5"]
    assert summary["commits"] == {0: ["a" * 40], 1: ["b" * 40]}
    assert "made at commits aaaaaaaaaaaa, bbbbbbbbbbbb: not one commit" in seed_spread.markdown({"lenet5": summary})


@pytest.mark.parametrize("argv, message", [
    (["--prefix", "x"], "nothing after --"),
    (["--prefix", "x", "--", "--model", "lenet5", "--seed", "3"], "this script sets each run's --seed and --out"),
    (["--prefix", "x", "--seeds", "1", "1", "--collect"], "each seed once"),
])
def test_bad_arguments_are_refused_before_any_run(argv, message, capsys):
    with pytest.raises(SystemExit):
        seed_spread.main(argv)
    assert message in capsys.readouterr().err


def test_collect_with_no_finished_run_says_so(tmp_path):
    with pytest.raises(SystemExit, match="no finished model"):
        seed_spread.main(["--prefix", str(tmp_path / "none"), "--collect"])
