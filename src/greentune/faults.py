"""Fault injection for the crash-safety suite (``benchmarks/faults.py``, tests/integration).

``GREENTUNE_FAULT`` names faults, comma-separated; unset (always, outside tests) nothing
happens beyond one dictionary lookup per point:

    kill@train/epoch-1       SIGKILL this process when the window ``train/epoch-1`` opens
    term@save#2              SIGTERM at the second time the point ``save`` is reached
    kill@checkpoint-write    between writing a checkpoint's temporary file and renaming it
    enospc@metrics.json      writing a file of that name fails: no space left on device
    erofs@energy.json        ... read-only file system;  eacces@NAME: permission denied

Points are meter windows (every phase of every command: ``data``, ``train/ridge-skip``,
``train/epoch-0``, ``train/validate-0``, ``test``, ``save``, ``baseline/linear``, ...) and a few
named moments (``checkpoint-write``, ``ledger-save``).
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter
from functools import cache

ENV = "GREENTUNE_FAULT"
_SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM}
_ERRNOS = {"enospc": errno.ENOSPC, "erofs": errno.EROFS, "eacces": errno.EACCES}
_seen: Counter[str] = Counter()


@cache
def _faults(spec: str) -> list[tuple[str, str, int]]:
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        action, _, where = item.partition("@")
        where, _, nth = where.partition("#")
        if action not in (*_SIGNALS, *_ERRNOS) or not where:
            raise ValueError(f"{ENV}: cannot read {item!r} (e.g. kill@train/epoch-1)")
        out.append((action, where, int(nth or 1)))
    return out


def point(name: str) -> None:
    """A place where the suite may kill or stop this process."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    _seen[name] += 1
    for action, where, nth in _faults(spec):
        if action in _SIGNALS and where == name and _seen[name] == nth:
            os.kill(os.getpid(), _SIGNALS[action])


def check_write(filename: str) -> None:
    """Raise the injected OSError when writing a file of this name should fail."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for action, where, _ in _faults(spec):
        if action in _ERRNOS and where == filename:
            code = _ERRNOS[action]
            raise OSError(code, os.strerror(code), filename)
