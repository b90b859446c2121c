"""One runner per run folder: an exclusive ``flock`` on ``<run>/.runner.lock`` that names its holder.

Two runners writing one folder mixed their results (one run's baseline with the other's later stages,
and an ``AssertionError`` on a state dict). The lock is an advisory ``fcntl.flock`` on a small file
holding the holder's pid, host, start time and command line: the kernel releases it when the holder
exits in any way (SIGKILL included), so a lock left by a dead process is simply taken over, and the
file's contents let the refusal name the process that still runs. Local file systems only (``flock``
over NFS depends on the server).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".runner.lock"


class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder's lock; the message names it."""


class RunLock:
    """``with RunLock(run_dir) as lock:`` -- ``lock.previous`` is the stale holder's record, if any."""

    def __init__(self, run_dir, flag: str = "--out"):
        self.path = Path(run_dir) / LOCK_NAME
        self.flag = flag  # how the caller chose the folder, for the refusal's advice
        self.previous: dict | None = None
        self._fd = None

    def acquire(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise RunFolderBusy(f"{self.path.parent} is in use by another runner: {describe(holder)}. "
                                f"Wait for it to finish (or stop it), or pass another {self.flag}.") from None
        self.previous = _read(fd) or None  # a record left by a process that died holding the lock
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # an empty file: the next runner finds no stale holder to report
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read(fd) -> dict:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {"pid": "?", "command": "unreadable lock file"}


def describe(record: dict | None) -> str:
    if not record:
        return "a process that left no record"
    return (f"process {record.get('pid', '?')} on {record.get('host', '?')} since {record.get('started', '?')} "
            f"({record.get('command', '?')})")
