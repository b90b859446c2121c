"""Atomic file writes: a temp file in the same folder, fsync, then rename, so nothing is half-written."""

from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path


def atomic_write_bytes(path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600 files; results are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path) -> Path:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


# mkstemp's names above: "." + the target's name + "." + 8 random characters + ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def remove_stale_temp_files(folder) -> list[Path]:
    """Delete the temp files that writes killed mid-way (SIGKILL, power loss) left under ``folder``.

    Call it only while no other process writes there (the runner holds the run folder's lock).
    Returns the removed paths.
    """
    removed = []
    for path in sorted(Path(folder).rglob(".*.tmp")):
        if path.is_file() and not path.is_symlink() and _TEMP_NAME.match(path.name):
            path.unlink()
            removed.append(path)
    return removed


class MissingStageOutput(FileNotFoundError):
    """A notebook needs a file an earlier notebook writes; the message says which one to run first."""


def require_output(path, made_by: str) -> Path:
    """``path`` if it exists, else ``MissingStageOutput`` naming the notebook that writes it.

    ``require_output(model_dir / "baseline.pt", "02_baseline_training")`` in notebook 03 turns a raw
    ``FileNotFoundError`` into "run 02 first".
    """
    path = Path(path)
    if path.exists():
        return path
    number = made_by[:2]
    raise MissingStageOutput(
        f"{path} does not exist yet: notebook {made_by} writes it, and it has not run (or did not finish) "
        f"for this model and run folder. Run notebook {number} first, e.g. `python -m helpers.run ... "
        f"--notebooks {number}` with the same --dataset, --model, --profile and --out, or run the notebooks in order.")
