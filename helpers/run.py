"""The main job: execute the notebooks in order for a dataset and a list of models (papermill).

    python -m helpers.run --dataset sea-animals --model lenet5 alexnet --profile cpu --out runs/NAME

Notebook 01 (the data) runs once per run folder, notebooks 02-06 once per model into
``runs/NAME/<model>/`` (executed copies with their figures, plus ``metrics.json``), and notebook 07
(the comparison) once at the end over every model's results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import data, models
from .config import PROFILES, default_profile
from .reporting import write_json

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
RUN_LEVEL_FIRST, RUN_LEVEL_LAST = ("01",), ("07",)


def notebooks(selected=None) -> list[Path]:
    found = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if selected:
        found = [p for p in found if p.name[:2] in selected]
    return found


def execute(notebook: Path, output: Path, parameters: dict, log) -> float:
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log(f"[run] {notebook.name} -> {output}")
    papermill.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name="python3",
                               cwd=str(NOTEBOOK_DIR), progress_bar=False, log_output=False)
    elapsed = time.time() - t0
    log(f"[run] {notebook.name} done in {elapsed:.0f} s")
    return elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="sea-animals", choices=data.DATASETS)
    parser.add_argument("--data-dir", default="", help="dataset folder (default: $SEA_ANIMALS_DIR, "
                        "data/sea-animals, or a kagglehub download)")
    parser.add_argument("--model", nargs="+", default=models.names(), metavar="NAME",
                        help=f"{' '.join(models.names())} (the default) or a torchvision classification "
                        "model by name, e.g. resnet18 mobilenet_v3_small")
    parser.add_argument("--profile", default=None, choices=sorted(PROFILES),
                        help="run size (default: gpu when CUDA is available, else cpu)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<dataset>-<profile>)")
    parser.add_argument("--notebooks", nargs="+", default=None, metavar="NN",
                        help="only these notebook numbers, e.g. 01 02")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE", dest="overrides",
                        help="change profile fields for this run, e.g. --set retrain_epochs=15 "
                        "target_kept=0.08 (values are JSON; a plain value applies to every model run)")
    args = parser.parse_args(argv)
    unknown = [m for m in args.model if not models.is_known(m)]
    if unknown:
        parser.error(f"unknown model(s) {unknown}: choose from {', '.join(models.names())} or a torchvision "
                     "classification model (python -c 'import helpers.models as m; print(m.torchvision_names())')")
    try:
        overrides = parse_overrides(args.overrides)
    except ValueError as exc:
        parser.error(str(exc))

    profile = args.profile or default_profile()
    run_dir = Path(args.out or f"runs/{args.dataset}-{profile}").resolve()
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else ""
    if args.data_dir and not Path(args.data_dir).exists():
        parser.error(f"--data-dir {args.data_dir} does not exist")
    base = {"dataset": args.dataset, "data_dir": data_dir, "profile": profile, "run_dir": str(run_dir),
            "seed": args.seed, "overrides": overrides}
    chosen = notebooks(args.notebooks)
    if not chosen:
        parser.error(f"no notebooks match {args.notebooks} in {NOTEBOOK_DIR}")
    log = lambda msg: print(msg, flush=True)
    timings, failures = {}, []

    def run_one(nb, output, params, key):
        try:
            timings[key] = execute(nb, output, params, log)
            return True
        except Exception as exc:  # papermill's execution error carries the failing cell's traceback
            failures.append(f"{key}: {type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]}")
            log(f"[run] FAILED {key}; the executed notebook {output} shows the error")
            return False

    for nb in [n for n in chosen if n.name[:2] in RUN_LEVEL_FIRST]:
        if not run_one(nb, run_dir / nb.name, {**base, "model_name": args.model[0]}, nb.stem):
            return _finish(run_dir, timings, failures, log)
    for model in args.model:
        for nb in [n for n in chosen if n.name[:2] not in RUN_LEVEL_FIRST + RUN_LEVEL_LAST]:
            if not run_one(nb, run_dir / model / nb.name, {**base, "model_name": model}, f"{model}/{nb.stem}"):
                break  # later notebooks of this model need this one's outputs
    for nb in [n for n in chosen if n.name[:2] in RUN_LEVEL_LAST]:
        run_one(nb, run_dir / nb.name, {**base, "model_name": args.model[0]}, nb.stem)
    return _finish(run_dir, timings, failures, log)


def parse_overrides(items) -> dict:
    """``["retrain_epochs=15", "sensitivity_sparsities=[0.5,0.9]"]`` -> a dict checked against the profile."""
    import json

    from .config import Profile

    known = set(Profile.__dataclass_fields__) - {"name"}
    overrides = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in known:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(known))}")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError(f"--set {item!r}: the value must be JSON, e.g. 15, 0.08, [0.5, 0.9] or "
                             '\'{"lenet5": 40}\'') from None
    return overrides


def _finish(run_dir, timings, failures, log) -> int:
    # Several invocations may share a run folder (one per model): keep the earlier timings.
    previous = run_dir / "runner.json"
    try:
        earlier = json.loads(previous.read_text()).get("timings_s", {}) if previous.exists() else {}
    except (ValueError, OSError):
        earlier = {}
    write_json(previous, {"timings_s": {**earlier, **timings}, "failures": failures})
    log(f"[run] total {sum(timings.values()):.0f} s; results in {run_dir}")
    for failure in failures:
        log(f"[run] failed: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
