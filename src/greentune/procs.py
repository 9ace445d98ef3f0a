"""Is a process still the one we started? (pid reuse and zombies included; a leaf module.)"""

from __future__ import annotations

import os
from pathlib import Path

import psutil

# Seconds; no machine has been up this long, so a larger start is an epoch time that an older
# greentune wrote (journals and schedule states outlive upgrades).
_EPOCH_FROM_S = 1e9


def process_started(pid: int) -> float | None:
    """When the process started, None when it is gone: also a zombie, dead but not yet reaped
    (as an orphan stays where PID 1 does not reap).

    On Linux it is seconds since boot, read from ``/proc/<pid>/stat``: psutil's ``create_time``
    adds the boot time the kernel derives from the wall clock, so a clock step (a VM paused
    and resumed, a laptop's suspend, an NTP correction) moved every live process's start and
    made it look like another process. Elsewhere it is psutil's ``create_time``."""
    since_boot = _linux_since_boot(pid)
    if since_boot is not None:
        return None if since_boot < 0 else since_boot
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except psutil.Error:
        return None


def boot_id() -> str | None:
    """This boot's identity (Linux's ``/proc/sys/kernel/random/boot_id``), None elsewhere: a
    start counted from boot says nothing once the machine has restarted."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def same_process(pid: int, started: float | None, boot: str | None = None) -> bool:
    """Is ``pid`` alive and (when ``started`` is known) still the process started then, in the
    boot ``boot`` (when known)?"""
    if boot is not None and boot != boot_id():
        return False  # the machine restarted since: whatever has this pid now is another
    if started is not None and started > _EPOCH_FROM_S and _linux():
        try:
            proc = psutil.Process(pid)
            alive = proc.status() != psutil.STATUS_ZOMBIE
            return alive and abs(proc.create_time() - started) < 1
        except psutil.Error:
            return False
    now = process_started(pid)
    return now is not None and (started is None or abs(now - started) < 1)


def _linux() -> bool:
    return Path("/proc/self/stat").is_file()


def _linux_since_boot(pid: int) -> float | None:
    """Seconds from boot to the start of ``pid``; -1 when it is gone or a zombie; None when
    there is no /proc to read (not Linux)."""
    if not _linux():
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1.0
    # The command name (2nd field) may hold spaces and parentheses: fields after its last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # zombie, dead
        return -1.0
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")  # starttime, field 22 of proc(5)
