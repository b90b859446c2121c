"""The main job: execute the notebooks in order for a dataset and a list of models (papermill).

    python -m helpers.run --dataset sea-animals --model lenet5 alexnet --profile cpu --out runs/NAME

Notebook 01 (the data) runs once per run folder, notebooks 02-06 once per model into
``runs/NAME/<model>/`` (executed copies with their figures, plus ``metrics.json``), and notebook 07
(the comparison) once at the end over every model's results.

The terminal shows one line per notebook and the notebooks' progress lines (``helpers.pipeline.progress``:
one per epoch, round or stage); everything else the kernels print (cell output, tqdm bars, the
kernel's own warnings) goes to ``runs/NAME/runner.log``. Every setting is checked for every model
before the first notebook starts, and the run folder is locked against a second runner.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .pipeline import config, progress, provenance
from . import data, models
from .io import remove_stale_temp_files
from .pipeline.lock import RunFolderBusy, RunLock, describe
from .reporting import write_json
from .pipeline.resume import remove_intermediate

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
RUN_LEVEL_FIRST, RUN_LEVEL_LAST = ("01",), ("07",)
LOG_NAME = "runner.log"
WAIT_POLICY = "OMP_WAIT_POLICY"  # read by OpenMP when a process starts (see kernel_wait_policy)


def notebooks(selected=None) -> list[Path]:
    found = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if selected:
        found = [p for p in found if p.name[:2] in selected]
    return found


class KernelOutput:
    """A papermill ``stdout_file``: every line goes to the log, progress lines also to the terminal."""

    def __init__(self, log_file, show):
        self.log_file, self.show, self._partial = log_file, show, ""

    def write(self, text: str) -> None:
        self.log_file.write(text)
        lines = (self._partial + text).replace("\r", "\n").split("\n")
        self._partial = lines.pop()
        for line in lines:
            shown = progress.strip_marker(line)
            if shown is not None:
                self.show(f"  {shown}")

    def flush(self) -> None:
        self.log_file.flush()


def quiet_kernel_manager(log_file):
    """A kernel manager class whose kernels write their own stderr (``[IPKernelApp] WARNING | ...``) to the log."""
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            kw["stderr"] = log_file
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    return QuietKernelManager


def execute(notebook: Path, output: Path, parameters: dict, log, log_file) -> float:
    """Run one notebook with papermill; its output goes to ``log_file``, its progress lines to ``log``."""
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log(f"[run] {notebook.stem} ({parameters.get('model_name', '')}) -> {output}")
    log_file.write(f"\n===== {notebook.name} -> {output}\n")
    papermill.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name="python3",
                               cwd=str(NOTEBOOK_DIR), progress_bar=False, log_output=False,
                               stdout_file=KernelOutput(log_file, log), stderr_file=log_file,
                               kernel_manager_class=quiet_kernel_manager(log_file))
    elapsed = time.time() - t0
    log(f"[run] {notebook.stem} done in {elapsed:.0f} s")
    return elapsed


def failure_record(key: str, exc: BaseException, output: Path) -> dict:
    """What failed, the whole error message, and the executed notebook that shows the traceback."""
    name = getattr(exc, "ename", None) or type(exc).__name__
    message = getattr(exc, "evalue", None)
    message = str(exc).strip() if message is None else str(message).strip()
    return {"step": key, "model": key.split("/")[0] if "/" in key else None, "error": name,
            "message": message, "notebook": str(output)}


def _program_name() -> str:
    """``dc-run`` when started as the console script, else ``python -m helpers.run``."""
    return "dc-run" if Path(sys.argv[0]).name == "dc-run" else "python -m helpers.run"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=_program_name(), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="sea-animals", choices=data.DATASETS)
    parser.add_argument("--data-dir", default="", help="dataset folder (default: $SEA_ANIMALS_DIR, "
                        "data/sea-animals, or a kagglehub download)")
    parser.add_argument("--model", nargs="+", default=models.names(), metavar="NAME",
                        help=f"{' '.join(models.names())} (the default) or a torchvision classification "
                        "model by name, e.g. resnet18 mobilenet_v3_small")
    parser.add_argument("--profile", default=None, choices=sorted(config.PROFILES),
                        help="run size (default: gpu when CUDA is available, else cpu)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<dataset>-<profile>)")
    parser.add_argument("--notebooks", nargs="+", default=None, metavar="NN",
                        help="only these notebook numbers, e.g. 01 02")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE", dest="overrides",
                        help="change profile fields for this run, e.g. --set retrain_epochs=15 "
                        "target_kept=0.08 (values are JSON; a plain value applies to every model run)")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep the per-epoch and per-round checkpoints of finished stages (by default "
                        "they are removed once a model's notebooks have all run; nothing needed to resume is)")
    return parser


def check_arguments(parser, args) -> tuple[str, Path, dict]:
    """Everything that can be wrong with the command line, refused before any notebook starts."""
    unknown = [m for m in args.model if not models.is_known(m)]
    if unknown:
        parser.error(f"unknown model(s) {unknown}: choose from {', '.join(models.names())} or a torchvision "
                     "classification model (python -c 'import helpers.models as m; print(m.torchvision_names())')")
    try:
        overrides = parse_overrides(args.overrides)
        profile = args.profile or config.default_profile()
        for model in args.model:
            config.settings_for(profile, model, args.dataset, overrides)
        config.check_seed(args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    run_dir = Path(args.out or f"runs/{args.dataset}-{profile}").resolve()
    rank = int(os.environ.get("RANK", "0"))  # under torchrun every process runs the notebooks
    if rank > 0:  # rank 0 writes the results; the others keep their copies of the stage files apart
        run_dir = run_dir / f".rank{rank}"
    blocking = next((p for p in [run_dir, *run_dir.parents] if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        parser.error(f"--out {args.out or run_dir}: {blocking} is a file, not a folder; pass a folder path "
                     "(it is created if missing).")
    if args.data_dir and not Path(args.data_dir).exists():
        parser.error(f"--data-dir {args.data_dir} does not exist")
    if not NOTEBOOK_DIR.is_dir():
        parser.error(f"{NOTEBOOK_DIR} is missing: the runner executes the notebooks of a checkout of this "
                     "repository; clone it and install it with `pip install -e .` (not from a wheel).")
    if not notebooks(args.notebooks):
        parser.error(f"no notebooks match {args.notebooks} in {NOTEBOOK_DIR}")
    return profile, run_dir, overrides


@contextmanager
def kernel_wait_policy():
    """The kernels started inside (and their DDP ranks) get ``OMP_WAIT_POLICY=PASSIVE`` unless the
    environment already sets it; the variable is restored afterwards.

    OpenMP's waiting threads then sleep instead of spinning, which costs nothing on an idle machine
    and much when another process holds a core: one SGD step on 2 threads, default -> PASSIVE, was
    0.029 -> 0.028 s (LeNet-5), 0.63 -> 0.58 (AlexNet 64 px), 1.30 -> 1.33 (EfficientNet-Lite0 160 px)
    idle and 0.135 -> 0.047, 1.20 -> 1.00, 3.38 -> 2.23 s beside one busy process, ending at the same
    weights to the bit (``python benchmarks/bench_wait_policy.py --busy 0`` and ``--busy 1``, commit
    1343cd3, the runs of this machine paused meanwhile).
    """
    before = os.environ.get(WAIT_POLICY)
    os.environ.setdefault(WAIT_POLICY, "PASSIVE")
    try:
        yield os.environ[WAIT_POLICY]
    finally:
        if before is None:
            os.environ.pop(WAIT_POLICY, None)
        else:
            os.environ[WAIT_POLICY] = before


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    profile, run_dir, overrides = check_arguments(parser, args)
    try:
        lock = RunLock(run_dir).acquire()
    except (RunFolderBusy, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    try:
        with open(run_dir / LOG_NAME, "a", encoding="utf-8", buffering=1) as log_file:
            def log(msg):
                print(msg, flush=True)
                log_file.write(msg + "\n")

            if lock.previous:
                log(f"[run] took over {run_dir}'s lock from {describe(lock.previous)}, which is no longer running")
            for path in remove_stale_temp_files(run_dir):
                log(f"[run] removed {path}, left by an interrupted write")
            try:
                with kernel_wait_policy():
                    return run_all(args, profile, run_dir, overrides, log, log_file)
            except KeyboardInterrupt:
                # the kernel dies with Ctrl-C; nbclient's cell task then fails with DeadKernelError,
                # which asyncio would print as a traceback ("Task exception was never retrieved")
                # when the task is collected: expected here, so not shown
                import logging

                logging.getLogger("asyncio").setLevel(logging.CRITICAL)
                log(f"[run] interrupted; the same command resumes from the last finished epoch ({run_dir})")
                return 130
    finally:
        lock.release()


def run_all(args, profile, run_dir, overrides, log, log_file) -> int:
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else ""
    base = {"dataset": args.dataset, "data_dir": data_dir, "profile": profile, "run_dir": str(run_dir),
            "seed": args.seed, "overrides": overrides}
    chosen = notebooks(args.notebooks)
    os.environ[progress.ENV_FLAG] = "1"  # the kernels started below inherit it: emit() adds the marker
    started, timings, failures, status = time.time(), {}, [], {}

    def run_one(nb, output, params, key):
        try:
            timings[key] = execute(nb, output, params, log, log_file)
            return True
        except Exception as exc:  # papermill's execution error carries the failing cell's error
            failures.append(failure_record(key, exc, output))
            log(f"[run] FAILED {key}: {failures[-1]['error']}: {failures[-1]['message']}")
            log(f"[run] the executed notebook shows where: {output}")
            return False

    log(f"[run] {args.dataset}, profile {profile}, models {' '.join(args.model)}; full log: {run_dir / LOG_NAME}")
    for nb in [n for n in chosen if n.name[:2] in RUN_LEVEL_FIRST]:
        if not run_one(nb, run_dir / nb.name, {**base, "model_name": args.model[0]}, nb.stem):
            return _finish(run_dir, started, timings, failures, status, log)
    for model in args.model:
        status[model] = {"status": "ok"}
        for nb in [n for n in chosen if n.name[:2] not in RUN_LEVEL_FIRST + RUN_LEVEL_LAST]:
            if not run_one(nb, run_dir / model / nb.name, {**base, "model_name": model}, f"{model}/{nb.stem}"):
                status[model] = {"status": "failed", **failures[-1]}
                break  # later notebooks of this model need this one's outputs
        if status[model]["status"] == "ok" and not args.keep_checkpoints:
            removed = remove_intermediate(run_dir / model)
            if removed:
                log(f"[run] {model}: removed {len(removed)} checkpoint(s) of finished stages "
                    "(--keep-checkpoints keeps them)")
    _record(run_dir, timings, failures, status)  # notebook 07 reports the failed models too
    for nb in [n for n in chosen if n.name[:2] in RUN_LEVEL_LAST]:
        run_one(nb, run_dir / nb.name, {**base, "model_name": args.model[0]}, nb.stem)
    code = _finish(run_dir, started, timings, failures, status, log)
    for line in summary_lines(run_dir, args.model, args.dataset):
        log(line)
    return code


def summary_lines(run_dir: Path, model_names, dataset: str) -> list[str]:
    """Per model: accuracy from its file, its size and ratio, where it is; then the folder's size and
    the commands that use the files."""
    from .reporting import read_metrics

    lines, files = [], []
    for model in model_names:
        compressed = read_metrics(run_dir / model).get("stages", {}).get("compressed")
        if not compressed:
            continue
        file = run_dir / model / Path(compressed["file"]).name
        files.append(file)
        lines.append(f"[run] {model}: {compressed['test_accuracy']:.2%} test accuracy from its file, "
                     f"{compressed['size_bytes']:,} bytes, {compressed['compression_ratio']:.1f}x smaller than "
                     f"fp32: {file}")
        lines.append(f"[run] {model}: {provenance.in_one_phrase(run_dir / model)}")
    if not files:
        return lines
    folder_bytes = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
    lines.append(f"[run] the run folder holds {folder_bytes / 1e6:.1f} MB")
    where = " --data-dir DIR" if dataset in ("folder", "sea-animals") else ""
    lines += ["[run] next:",
              f"  dc-predict {files[0]} IMAGE_OR_FOLDER...      # classify your images",
              f"  dc-evaluate {files[0]} --dataset {dataset}{where}      # score the file on the test split",
              f"  dc-report {run_dir}      # every stage of every model as tables"]
    return lines


def parse_overrides(items) -> dict:
    """``["retrain_epochs=15", "sensitivity_sparsities=[0.5,0.9]"]`` -> a dict checked against the profile."""
    known = set(config.Profile.__dataclass_fields__) - {"name"}
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


def _record(run_dir, timings, failures, status) -> dict:
    # Several invocations may share a run folder (one per model): keep the earlier timings and the
    # status of models this invocation did not run.
    previous = run_dir / "runner.json"
    try:
        earlier = json.loads(previous.read_text()) if previous.exists() else {}
    except (ValueError, OSError):
        earlier = {}
    record = {"timings_s": {**earlier.get("timings_s", {}), **timings}, "failures": failures,
              "models": {**earlier.get("models", {}), **status}}
    write_json(previous, record)
    return record


def _finish(run_dir, started, timings, failures, status, log) -> int:
    _record(run_dir, timings, failures, status)
    log(f"[run] total {time.time() - started:.0f} s; results in {run_dir}")
    for failure in failures:
        log(f"[run] failed: {failure['step']}: {failure['error']}: {failure['message']}\n"
            f"      executed notebook: {failure['notebook']}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
