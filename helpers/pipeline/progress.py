"""One compact progress line per epoch, round or stage, shown live by the runner.

The notebooks run in a papermill kernel, a separate process whose output the runner receives only as
Jupyter stream messages. ``emit(text)`` prints ``text`` on the kernel's stdout; when the runner started
the kernel it sets ``$DC_PROGRESS`` and ``emit`` puts ``MARKER`` in front, so that the runner's stdout
filter (``helpers.run.KernelOutput``) can show exactly these lines in the terminal and write the rest
(cell prints, tqdm bars, warnings) only to the run folder's ``runner.log``. Without a runner (a notebook
opened by hand, a test, a script) it is a plain ``print``: no file, no socket, nothing to clean up.

    lenet5 02 baseline  epoch 7/30  loss 1.84  val 38.2%  41 s
"""

from __future__ import annotations

import os
import sys

ENV_FLAG = "DC_PROGRESS"  # set to "1" by the runner for the kernels it starts
MARKER = "[dc-progress] "  # what the runner's filter looks for at the start of a kernel stdout line


def enabled_by_runner() -> bool:
    return os.environ.get(ENV_FLAG) == "1"


def emit(text: str) -> None:
    """Print one progress line (with the runner's marker when a runner is listening)."""
    line = " ".join(str(text).splitlines()).strip()  # one line, whatever the caller passed
    prefix = MARKER if enabled_by_runner() else ""
    print(prefix + line, file=sys.stdout, flush=True)


def strip_marker(line: str) -> str | None:
    """The progress text of a kernel stdout line, or None when the line is not a progress line."""
    return line[len(MARKER):] if line.startswith(MARKER) else None


def epoch_line(prefix: str, record: dict, epochs: int) -> str:
    """``training.fit``'s per-epoch ``record`` as one line: ``<prefix>  epoch 7/30  loss 1.84  val 38.2%  41 s``.

    ``record`` needs ``epoch``; ``train_loss``, ``val_top1`` and ``time_s`` are shown when present.
    """
    parts = [prefix.strip(), f"epoch {record['epoch']}/{epochs}"] if prefix.strip() else \
        [f"epoch {record['epoch']}/{epochs}"]
    if record.get("train_loss") is not None:
        parts.append(f"loss {record['train_loss']:.3g}")
    if record.get("val_top1") is not None:
        parts.append(f"val {100 * record['val_top1']:.1f}%")
    if record.get("time_s") is not None:
        parts.append(f"{record['time_s']:.0f} s")
    return "  ".join(parts)


def fit_logger(prefix: str, epochs: int):
    """A ``log=`` callable for ``training.fit``: emits each epoch's record as a progress line.

    ``fit`` logs each epoch as ``"epoch=7 lr=0.01 train_loss=1.84 ..."`` (or a record dict) and a
    "resumed from" note; epochs become compact lines, other messages are shown as they are. Pass it as
    ``training.fit(..., log=progress.fit_logger("lenet5 02 baseline", epochs))``.
    """
    def log(message):
        record = message if isinstance(message, dict) else parse_record(str(message))
        if record and "epoch" in record:
            emit(epoch_line(prefix, record, epochs))
        else:
            emit(f"{prefix.strip()}  {message}")
    return log


def parse_record(text: str) -> dict | None:
    """``"epoch=7 lr=0.01 train_loss=1.84"`` -> ``{"epoch": 7, "lr": 0.01, "train_loss": 1.84}``; None if not so."""
    record = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if not sep:
            return None
        try:
            record[key] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            record[key] = value
    return record or None
