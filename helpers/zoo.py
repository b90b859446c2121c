"""The model zoo: compressed files shipped in the repository's ``zoo/``, described by ``zoo/manifest.json``.

Each manifest entry says what the file is and how to make it again::

    {"file": "efficientnet_lite0-sea-animals.dcz", "model": "efficientnet_lite0", "dataset": "sea-animals",
     "image_size": 160, "test_accuracy": 0.8308, "fp32_bytes": 13601884, "file_bytes": 1633425,
     "commit": "<the commit the run was made at>", "command": "python -m helpers.run ..."}

``test_accuracy`` is the one notebook 06 measured by evaluating the file itself on the test split;
``fp32_bytes`` is the fine-tuned dense model's size. Every file comes from one run from scratch of its
``command`` at its ``commit`` (no stage resumed from another commit), so anyone can make it again;
``add`` refuses a run folder whose records name another commit or changed files
(``helpers.pipeline.provenance``).

    python -m helpers.zoo add runs/sea-transfer/efficientnet_lite0 --commit C --command "..."
    python -m helpers.zoo check            # every entry: the file loads, its size and model match
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .io import atomic_write_text
from .pipeline import provenance

ZOO_DIR = Path(__file__).resolve().parents[1] / "zoo"  # the repository's zoo/ (a source checkout)
MANIFEST = "manifest.json"
KEYS = ("file", "model", "dataset", "image_size", "test_accuracy", "fp32_bytes", "file_bytes", "commit", "command")


def read_manifest(zoo_dir=ZOO_DIR) -> list[dict]:
    path = Path(zoo_dir) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else []


def entry_from_run(model_dir, commit: str, command: str) -> dict:
    """A manifest entry for the compressed file a finished run left in ``model_dir`` (``runs/X/<model>``)."""
    model_dir = Path(model_dir)
    metrics_path = model_dir / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{model_dir} has no metrics.json: pass a finished run's model folder.")
    metrics = json.loads(metrics_path.read_text())
    stages = metrics["stages"]
    if "compressed" not in stages:
        raise ValueError(f"{model_dir}: notebook 06 has not finished there (no 'compressed' stage).")
    file = model_dir / f"{metrics['model']}.dcz"  # notebook 06's name; the folder may have moved since
    return {"file": f"{metrics['model']}-{metrics['dataset']}.dcz", "model": metrics["model"],
            "dataset": metrics["dataset"], "image_size": stages["baseline"]["image_size"],
            "test_accuracy": stages["compressed"]["test_accuracy"], "fp32_bytes": stages["baseline"]["size_bytes"],
            "file_bytes": file.stat().st_size, "commit": commit, "command": command, "_source": str(file)}


def add(model_dir, commit: str, command: str, zoo_dir=ZOO_DIR) -> dict:
    """Copy a run's file into the zoo and put its entry in the manifest (replacing one of the same name).

    ValueError, before anything is copied, when the folder's records show work done at another commit
    than ``commit`` or with changed tracked files (``provenance.problems``)."""
    wrong = provenance.problems(model_dir, commit)
    if wrong:
        raise ValueError(f"{model_dir} is not one run at commit {commit}: {'; '.join(wrong)}. A zoo file comes "
                         "from one run from scratch: run its command again in a clean clone of that commit.")
    entry = entry_from_run(model_dir, commit, command)
    zoo_dir = Path(zoo_dir)
    zoo_dir.mkdir(parents=True, exist_ok=True)
    source = Path(entry.pop("_source"))
    staged = zoo_dir / (entry["file"] + ".tmp")
    shutil.copyfile(source, staged)
    staged.replace(zoo_dir / entry["file"])
    entries = [e for e in read_manifest(zoo_dir) if e["file"] != entry["file"]] + [entry]
    atomic_write_text(zoo_dir / MANIFEST, json.dumps(entries, indent=1) + "\n")
    return entry


def check(zoo_dir=ZOO_DIR) -> list[str]:
    """What is wrong with the zoo: per entry, a missing key or file, another size, model or input size."""
    from . import load_compressed

    zoo_dir, problems = Path(zoo_dir), []
    for entry in read_manifest(zoo_dir):
        name = entry.get("file", "?")
        missing = [k for k in KEYS if k not in entry]
        if missing:
            problems.append(f"{name}: the manifest entry lacks {missing}")
            continue
        path = zoo_dir / name
        if not path.is_file():
            problems.append(f"{name}: no such file in {zoo_dir}")
            continue
        if path.stat().st_size != entry["file_bytes"]:
            problems.append(f"{name}: {path.stat().st_size} bytes, the manifest says {entry['file_bytes']}")
        try:
            model = load_compressed(path)
        except Exception as exc:  # whatever the reader refuses, the entry is broken
            problems.append(f"{name}: does not load ({type(exc).__name__}: {exc})")
            continue
        if model.create_args.get("name") != entry["model"]:
            problems.append(f"{name}: holds {model.create_args.get('name')}, the manifest says {entry['model']}")
        if (model.metadata or {}).get("image_size") != entry["image_size"]:
            problems.append(f"{name}: takes {(model.metadata or {}).get('image_size')} px inputs, "
                            f"the manifest says {entry['image_size']}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.zoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="action", required=True)
    adding = commands.add_parser("add", help="copy a finished run's file into the zoo")
    adding.add_argument("model_dir", help="a finished run's model folder, e.g. runs/sea-transfer/efficientnet_lite0")
    adding.add_argument("--commit", required=True, help="the commit the run was made at")
    adding.add_argument("--command", required=True, help="the command that made the run, from scratch")
    commands.add_parser("check", help="check every manifest entry")
    for sub in commands.choices.values():
        sub.add_argument("--zoo", default=str(ZOO_DIR), help="the zoo folder (default: the repository's zoo/)")
    args = parser.parse_args(argv)
    if args.action == "add":
        try:
            entry = add(args.model_dir, args.commit, args.command, args.zoo)
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(entry, indent=1))
        return 0
    problems = check(args.zoo)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"{len(read_manifest(args.zoo))} entries, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
