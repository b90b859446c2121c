"""Which commit of this code made a run folder's results, so that a table or the zoo can name one.

A run resumes across sessions, and the code may change in between: a folder whose baseline was
trained at one commit and whose pruning rounds ran at another reproduces from neither. Three
places record the commit (``code_version``: ``git rev-parse HEAD`` of the checkout the package is
imported from, and whether its tracked files differ from that commit):

* every stage record in ``metrics.json`` and every pruning round's record, when it is written;
* ``provenance.json``, one entry each time a process starts training in the folder (a fresh stage
  or one resumed from its epoch checkpoint), so that work later continued elsewhere is seen too.

``commits_of`` gathers them and ``problems`` says what stops the folder from being "one run from
scratch at commit C" (``python -m helpers.zoo add`` refuses such a folder). Outside a git checkout
(an installed wheel) the commit is unknown and recorded as None. Records written before this module
carry none; they are counted, not guessed.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from ..io import atomic_write_text

PROVENANCE = "provenance.json"
_UNKNOWN = {"commit": None, "dirty": None}


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version(root=None) -> dict:
    """``{"commit", "dirty"}`` of the git checkout holding this package (``root``: its top folder),
    or both None when the package does not sit at the top of a checkout (a wheel in site-packages,
    even inside a virtual environment that lives in some repository)."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root.resolve():
        return dict(_UNKNOWN)
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    if commit is None or status is None:
        return dict(_UNKNOWN)
    return {"commit": commit, "dirty": bool(status)}


def note_work(out_dir, stage: str) -> None:
    """Append to ``out_dir/provenance.json`` that this code starts (or resumes) work on ``stage``."""
    path = Path(out_dir) / PROVENANCE
    entries = json.loads(path.read_text()) if path.is_file() else []
    entries.append({"stage": stage, **code_version(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    atomic_write_text(path, json.dumps(entries, indent=1))


def commits_of(model_dir) -> dict:
    """What ``model_dir`` says about the code that made it: ``{"commits": {commit: [where, ...]},
    "dirty": [where, ...], "unrecorded": [where, ...]}`` over its stage records, round records and
    ``provenance.json`` (``where`` names the record; a None commit is an unknown one)."""
    model_dir = Path(model_dir)
    found = {"commits": {}, "dirty": [], "unrecorded": []}

    def take(where: str, code: dict | None) -> None:
        if code is None:
            found["unrecorded"].append(where)
            return
        found["commits"].setdefault(code.get("commit"), []).append(where)
        if code.get("dirty"):
            found["dirty"].append(where)

    metrics = model_dir / "metrics.json"
    for stage, record in (json.loads(metrics.read_text()).get("stages", {}) if metrics.is_file() else {}).items():
        take(f"stage {stage}", record.get("code"))
    for path in sorted(model_dir.glob("*_round*.json")):
        take(path.stem, json.loads(path.read_text()).get("code"))
    path = model_dir / PROVENANCE
    for entry in json.loads(path.read_text()) if path.is_file() else []:
        take(f"training of {entry.get('stage')} started {entry.get('time')}", entry)
    return found


def in_one_phrase(model_dir) -> str:
    """Which code made the folder's records, for the runner's closing lines and ``dc-report``."""
    found = commits_of(model_dir)
    commits = sorted(found["commits"], key=lambda c: c or "")
    if not commits:
        return "no record names its commit (made before commits were recorded)"
    if commits == [None] and not found["unrecorded"]:
        return "made by an installed copy of the package, outside a git checkout: commit unknown"
    names = ", ".join((c or "unknown")[:12] for c in commits)
    if len(commits) > 1 or None in commits or found["dirty"]:
        return (f"records from commits {names}" + (" (tracked files changed)" if found["dirty"] else "")
                + ": not one run from scratch at one commit (see provenance.json)")
    if found["unrecorded"]:
        return f"records made at commit {names}; {len(found['unrecorded'])} older ones name no commit"
    return f"every record made at commit {names}"


def problems(model_dir, commit: str) -> list[str]:
    """Why ``model_dir`` is not one run at ``commit`` (a full hash or a prefix of one): a record made
    at another or an unknown commit, or with tracked files changed. Empty when nothing contradicts
    it (records older than this module cannot, see ``commits_of``)."""
    if not (isinstance(commit, str) and 7 <= len(commit) <= 40 and all(c in "0123456789abcdef" for c in commit)):
        raise ValueError(f"commit must be a commit hash (7 to 40 lowercase hex digits), got {commit!r}: "
                         "`git rev-parse HEAD` in the clone the run was made in prints it")
    found, out = commits_of(model_dir), []
    for other, places in found["commits"].items():
        if other is None:
            out.append(f"made outside a git checkout (commit unknown): {', '.join(places[:3])}")
        elif not other.startswith(commit):
            out.append(f"made at commit {other[:12]}, not {commit[:12]}: {', '.join(places[:3])}"
                       + (f" and {len(places) - 3} more" if len(places) > 3 else ""))
    if found["dirty"]:
        out.append(f"made with tracked files changed from their commit: {', '.join(found['dirty'][:3])}")
    return out
