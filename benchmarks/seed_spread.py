"""The spread of a profile's results over seeds: one run from scratch per seed, then mean ± sd.

A single run's ratio rides on a few gated decisions (how many rounds past the plan validation
allows), and its accuracy on ~1,700 test images has a standard error of ~1.2 points, so one run
says little about what another seed, or another machine, gives. This runs ``python -m helpers.run``
once per seed, each into its own folder (``PREFIX-seed<S>``; an interrupted run resumes there), and
reports per model, over the seeds: the file's ratio and test top-1, the baseline's test top-1, the
file's difference to it, the weights kept and the rounds past the plan that were accepted, as mean ±
sample standard deviation, min and max.

    python benchmarks/seed_spread.py --seeds 0 1 2 --prefix runs/spread-sea-cpu -- \\
        --dataset sea-animals --data-dir "$SEA_ANIMALS_DIR" --model lenet300 lenet5 --profile cpu
    python benchmarks/seed_spread.py --seeds 0 1 2 --prefix runs/spread-sea-cpu --collect   # runs done

Everything after ``--`` goes to the runner as it is (not ``--seed`` or ``--out``, which this sets).
The summary is printed as a Markdown table and written to ``PREFIX-spread.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from helpers import reporting  # noqa: E402
from helpers.pipeline import provenance  # noqa: E402

# (column, how to read it from one model's metrics.json stages)
MEASURES = {
    "ratio": lambda s: s["compressed"]["compression_ratio"],
    "file_top1": lambda s: s["compressed"]["test_accuracy"],
    "baseline_top1": lambda s: s["baseline"]["test_accuracy"],
    "file_minus_baseline": lambda s: s["compressed"]["test_accuracy"] - s["baseline"]["test_accuracy"],
    "kept": lambda s: s["pruned"]["kept_fraction"],
    "extra_rounds_accepted": lambda s: sum(bool(r.get("accepted")) for r in s["pruned"].get("rounds", [])),
}


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min and max of ``values``."""
    if not values:
        raise ValueError("spread() of no values: no finished run to summarize.")
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "sd": sd, "min": min(values), "max": max(values), "n": len(values)}


def collect(run_dirs: dict[int, Path]) -> dict:
    """Per model, each seed's measures and their spread, from the run folders' metrics (seed -> folder)."""
    per_model: dict[str, dict] = {}
    for seed, run_dir in sorted(run_dirs.items()):
        for metrics_path in sorted(Path(run_dir).glob("*/metrics.json")):
            metrics = json.loads(metrics_path.read_text())
            stages = metrics.get("stages", {})
            if not {"baseline", "pruned", "compressed"} <= set(stages):
                continue  # an unfinished model: left out, and the count of seeds says so
            row = {name: float(read(stages)) for name, read in MEASURES.items()}
            entry = per_model.setdefault(metrics["model"], {"seeds": {}, "commits": {}})
            entry["seeds"][seed] = row
            # the code that made the seed's records (helpers.pipeline.provenance): one commit, from scratch
            entry["commits"][seed] = sorted(c or "unknown" for c in provenance.commits_of(metrics_path.parent)["commits"])
    if not per_model:
        raise SystemExit(f"no finished model in {', '.join(map(str, run_dirs.values()))}: run them first.")
    for entry in per_model.values():
        entry["spread"] = {name: spread([row[name] for row in entry["seeds"].values()]) for name in MEASURES}
    return per_model


def markdown(per_model: dict) -> str:
    lines = ["| model | seeds | ratio | file top-1 | baseline top-1 | file − baseline | kept | extra rounds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model, entry in per_model.items():
        s = entry["spread"]
        pct = lambda m: f"{100 * s[m]['mean']:.2f} ± {100 * s[m]['sd']:.2f} %"  # noqa: E731
        lines.append(f"| {model} | {', '.join(map(str, entry['seeds']))} | {s['ratio']['mean']:.1f}× ± "
                     f"{s['ratio']['sd']:.1f} ({s['ratio']['min']:.1f}–{s['ratio']['max']:.1f}) | {pct('file_top1')} | "
                     f"{pct('baseline_top1')} | {100 * s['file_minus_baseline']['mean']:+.2f} ± "
                     f"{100 * s['file_minus_baseline']['sd']:.2f} | {pct('kept')} | "
                     f"{s['extra_rounds_accepted']['mean']:.1f} ({s['extra_rounds_accepted']['min']:.0f}–"
                     f"{s['extra_rounds_accepted']['max']:.0f}) |")
    made = sorted({c for entry in per_model.values() for commits in entry["commits"].values() for c in commits})
    lines.append(f"\nrecords made at commit {made[0][:12]}" if len(made) == 1 else
                 f"\nrecords made at commits {', '.join(c[:12] for c in made)}: not one commit" if made else
                 "\nno record names its commit (made before commits were recorded)")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    runner_args = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--prefix", required=True, help="run folders are PREFIX-seed<S>")
    parser.add_argument("--collect", action="store_true", help="only summarize the finished runs")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds {args.seeds}: each seed once")
    taken = [a for a in runner_args if a.split("=")[0] in ("--seed", "--out")]
    if taken:
        parser.error(f"{', '.join(taken)} after --: this script sets each run's --seed and --out")
    if not args.collect and not runner_args:
        parser.error("nothing after --: give the runner's arguments (dataset, models, profile), or --collect")
    run_dirs = {seed: Path(f"{args.prefix}-seed{seed}").resolve() for seed in args.seeds}
    if not args.collect:
        for seed, run_dir in run_dirs.items():
            command = [sys.executable, "-m", "helpers.run", *runner_args, "--seed", str(seed), "--out", str(run_dir)]
            print("[spread]", " ".join(command), flush=True)
            if subprocess.run(command, cwd=REPO).returncode != 0:
                print(f"[spread] seed {seed} failed; its folder resumes when this is run again", flush=True)
    summary = collect(run_dirs)
    reporting.write_json(Path(f"{args.prefix}-spread.json"), {"runner_args": runner_args, "models": summary})
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
