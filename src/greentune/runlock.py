"""One writer per run directory: an advisory ``flock`` on ``run.lock`` plus a holder record.

The kernel drops a ``flock`` when its holder dies, however it dies (``kill -9`` included), so
"is the lock free?" is the honest answer to "is anyone still working on this run?": a run.json
that says ``running`` under a free lock belongs to a process that died (``RunDir.info`` then
reports ``crashed``). The record inside the file (pid, host, command, start) is for messages
only; the lock itself decides.

A supervisor (``greentune run --nproc``) takes the lock and hands its open file to torchrun;
the workers it starts find their ancestor in the record and work under it. Locks are advisory
and local: on a network file system they hold only where the server implements ``flock``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from greentune.errors import CheckpointError

LOCK_FILE = "run.lock"


class RunLockedError(CheckpointError):
    """Another live process is writing this run directory."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a run directory's lock."""

    pid: int
    host: str
    command: str
    started: str
    """UTC, ISO 8601."""
    pids: list[int] = field(default_factory=list)
    """Further processes working under this lock (torchrun under ``run --nproc``)."""
    last_run: dict[str, Any] | None = None
    """The newest earlier holder that was a ``run``: who left run.json at ``running``."""

    def runner(self) -> Holder:
        """The holder that ran the run: this one, or the last ``run`` before it."""
        if self.command.startswith("run") or self.last_run is None:
            return self
        return Holder(**self.last_run)

    def describe(self) -> str:
        return f"`greentune {self.command}` (pid {self.pid} on {self.host}, since {self.started})"


class RunLock:
    """Held from ``acquire`` until ``release`` (or the process's death)."""

    def __init__(self, path: Path, fd: int | None, holder: Holder) -> None:
        self.path = path
        self.fd = fd
        """None when an ancestor holds the lock for this process."""
        self.holder = holder

    @property
    def inherited(self) -> bool:
        return self.fd is None

    def add_pid(self, pid: int) -> None:
        """Record another process that works under this lock (and may keep it held)."""
        if self.fd is None:
            return
        self.holder = Holder(**{**asdict(self.holder), "pids": [*self.holder.pids, pid]})
        _write_record(self.fd, self.holder)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(run_path: Path, command: str, wait_s: float = 0.0) -> RunLock:
    """Take ``run_path``'s lock, or raise RunLockedError naming the live holder (after trying
    for ``wait_s`` seconds: a short write, such as a service's ledger rows, can wait its turn).

    A process whose ancestor holds the lock (a torchrun worker under ``run --nproc``) gets an
    inherited lock without taking it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return _acquire(run_path, command)
        except RunLockedError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def _acquire(run_path: Path, command: str) -> RunLock:
    path = Path(run_path) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CheckpointError(f"cannot lock {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = read_holder(run_path)
        if holder is not None and _is_ancestor(holder):
            return RunLock(path, None, holder)
        who = holder.describe() if holder else "another process"
        raise RunLockedError(
            f"{run_path} is in use by {who}; wait for it to finish, or stop it "
            f"(kill -TERM {holder.pid if holder else '<pid>'}) and continue later with "
            f"greentune run --resume {run_path}"
        ) from None
    before = read_holder(run_path)
    last_run = None
    if before is not None:
        runner = before.runner()
        last_run = asdict(runner) | {"last_run": None} if runner.command.startswith("run") else None
    holder = Holder(
        pid=os.getpid(),
        host=socket.gethostname(),
        command=command,
        started=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        last_run=last_run,
    )
    _write_record(fd, holder)
    return RunLock(path, fd, holder)


def live_holder(run_path: Path) -> Holder | None:
    """The holder when a live process holds the lock; None when it is free (or never taken)."""
    path = Path(run_path) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_holder(run_path) or Holder(0, "?", "?", "?")
    finally:
        os.close(fd)  # closing drops the shared lock taken on success
    return None


def read_holder(run_path: Path) -> Holder | None:
    """The record of the last holder (alive or not), None when unreadable."""
    try:
        raw: dict[str, Any] = json.loads((Path(run_path) / LOCK_FILE).read_text() or "null")
        return Holder(**raw)
    except (OSError, ValueError, TypeError):
        return None


def _write_record(fd: int, holder: Holder) -> None:
    # the lock file is rewritten in place (not renamed): the lock lives on this very file
    data = (json.dumps(asdict(holder)) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _is_ancestor(holder: Holder) -> bool:
    if holder.host != socket.gethostname():
        return False
    import psutil

    try:
        mine = {p.pid for p in psutil.Process().parents()}
    except psutil.Error:
        return False
    return bool(mine & {holder.pid, *holder.pids})
