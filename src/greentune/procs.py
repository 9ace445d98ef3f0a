"""Is a process still the one we started? (pid reuse and zombies included; a leaf module.)"""

from __future__ import annotations

import psutil


def process_started(pid: int) -> float | None:
    """The process's start time (psutil ``create_time``), None when it is gone: also a zombie,
    dead but not yet reaped (as an orphan stays where PID 1 does not reap)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except psutil.Error:
        return None


def same_process(pid: int, started: float | None) -> bool:
    """Is ``pid`` alive and (when ``started`` is known) still the process started then?"""
    now = process_started(pid)
    return now is not None and (started is None or abs(now - started) < 1)
