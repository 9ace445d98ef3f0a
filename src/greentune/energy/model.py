"""Modelled energy for machines without counters (VMs, containers): CPU time x power per thread.

CPU: the CPU seconds of this process (all threads) and of its waited-for children, times the
active power of one hardware thread. That power is the CPU's TDP divided by its threads per
package, with the TDP looked up in the table CodeCarbon ships (``cpu_power.csv``); the matched
entry is recorded. On a VM the guest cannot see the host's package, so TDP / threads would hand
a 2-vCPU slice the whole package's TDP: there, and when nothing matches, the model uses
CodeCarbon's default of 4 W per thread (``codecarbon.core.cpu.DEFAULT_POWER_PER_CORE``).
Memory: resident set size x 0.375 W per GB (3 W per 8 GB, the rule CodeCarbon 2.x used).
Idle and shared machine power are not attributed: the model answers "what did this work add?".
Every row this source produces says ``model``; it is never reported as measured.
"""

from __future__ import annotations

import csv
import functools
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from greentune.energy.base import SourceKind, codecarbon_data_path
from greentune.errors import EnergyError

DEFAULT_POWER_PER_THREAD_W = 4.0
"""CodeCarbon's fallback for unknown CPUs (codecarbon/core/cpu.py DEFAULT_POWER_PER_CORE)."""
DEFAULT_MEMORY_POWER_PER_GB_W = 0.375
"""3 W per 8 GB of RAM: CodeCarbon 2.x's memory model."""
_NOISE = re.compile(r"\((?:r|tm)\)|\bcpu\b|\bprocessor\b|@.*$|\d+-core|\bwith\b.*$")


@dataclass(frozen=True)
class CpuPower:
    """How one CPU second was turned into joules, for the ledger's ``details``."""

    cpu_model: str
    power_per_thread_w: float
    tdp_w: float | None
    matched_entry: str | None
    how: str


def normalise_cpu_name(name: str) -> str:
    text = _NOISE.sub(" ", name.lower().replace("(r)", " ").replace("(tm)", " "))
    return " ".join(text.replace(",", " ").split())


def match_tdp(cpu_model: str, table: dict[str, float]) -> tuple[str, float] | None:
    """Exact match on normalised names first, else the most specific table entry whose every
    word appears in the CPU's name. Either way the entry must carry a model number (a word
    with a digit): 'Intel Xeon' says nothing about a CPU's power."""
    wanted = normalise_cpu_name(cpu_model)
    normalised = {normalise_cpu_name(k): k for k in table if any(ch.isdigit() for ch in k)}
    if wanted in normalised:
        entry = normalised[wanted]
        return entry, table[entry]
    words = set(wanted.split())
    best: str | None = None
    for norm, entry in normalised.items():
        if set(norm.split()) <= words and (
            best is None or len(norm) > len(normalise_cpu_name(best))
        ):
            best = entry
    return (best, table[best]) if best else None


def load_tdp_table() -> dict[str, float]:
    """CodeCarbon's CPU table: name -> TDP in watts."""
    path = codecarbon_data_path("hardware", "cpu_power.csv")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise EnergyError(
            f"the CPU power table of the codecarbon package is missing ({exc}); reinstall "
            "greentune's dependencies or set energy.cpu_power_per_thread_w"
        ) from None
    table: dict[str, float] = {}
    for row in csv.DictReader(text.splitlines()):
        try:
            table[row["Name"].strip()] = float(row["TDP"])
        except (KeyError, TypeError, ValueError):
            continue
    return table


@functools.lru_cache(maxsize=8)
def _match_package_table(cpu_model: str) -> tuple[str, float] | None:
    """``match_tdp`` against CodeCarbon's table, read and matched once per CPU name: every
    meter asks (a federated run opens one per client message), and a match walks ~4,000 rows."""
    return match_tdp(cpu_model, load_tdp_table())


def cpu_info(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (empty where there is none)."""
    info: dict[str, str] = {}
    try:
        for line in path.read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def resolve_cpu_power(
    power_per_thread_w: float | None = None,
    info: dict[str, str] | None = None,
    table: dict[str, float] | None = None,
) -> CpuPower:
    info = cpu_info() if info is None else info
    name = info.get("model name", "unknown CPU")
    if power_per_thread_w is not None:
        return CpuPower(name, power_per_thread_w, None, None, "energy.cpu_power_per_thread_w")
    found = _match_package_table(name) if table is None else match_tdp(name, table)
    if found is None:
        how = f"no entry in CodeCarbon's table matches {name!r}: its 4 W per thread default"
        return CpuPower(name, DEFAULT_POWER_PER_THREAD_W, None, None, how)
    entry, tdp_w = found
    virtual = "hypervisor" in info.get("flags", "").split()
    threads = int(info.get("siblings", "0") or 0)
    if virtual or threads < 1:
        how = (
            f"matched {entry!r} ({tdp_w:g} W) but this is a VM: its vCPUs are a slice of a "
            "package of unknown size, so CodeCarbon's 4 W per thread default"
        )
        return CpuPower(name, DEFAULT_POWER_PER_THREAD_W, tdp_w, entry, how)
    how = f"TDP {tdp_w:g} W of {entry!r} / {threads} threads per package"
    return CpuPower(name, tdp_w / threads, tdp_w, entry, how)


class ProcessModelSource:
    """Cumulative modelled joules of this process (and its waited-for children).

    With ``children=True`` (``greentune energy measure``) the memory term follows the running
    child processes, so the meter polls once a second; otherwise window edges suffice.
    """

    name = "model"
    kind: SourceKind = "model"

    def __init__(
        self,
        cpu: CpuPower,
        memory_power_per_gb_w: float = DEFAULT_MEMORY_POWER_PER_GB_W,
        children: bool = False,
        cpu_seconds: Callable[[], float] | None = None,
        rss_bytes: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cpu = cpu
        self.memory_power_per_gb_w = memory_power_per_gb_w
        self.poll_interval_s = 1.0 if children else None
        self._cpu_seconds = cpu_seconds or _process_cpu_seconds
        self._rss = rss_bytes or (_tree_rss_bytes if children else _own_rss_bytes)
        self._clock = clock
        self._lock = threading.Lock()
        self._cpu0 = self._cpu_seconds()
        self._t = clock()
        self._rss_last = self._rss()
        self._dram_j = 0.0

    def components(self) -> list[str]:
        return ["cpu", "dram"]

    def poll(self) -> None:
        with self._lock:
            now, rss = self._clock(), self._rss()
            mean_gb = (rss + self._rss_last) / 2 / 1e9
            self._dram_j += mean_gb * self.memory_power_per_gb_w * (now - self._t)
            self._t, self._rss_last = now, rss

    def read(self) -> dict[str, float]:
        self.poll()
        cpu_j = (self._cpu_seconds() - self._cpu0) * self.cpu.power_per_thread_w
        return {"cpu": cpu_j, "dram": self._dram_j}

    def details(self) -> dict[str, object]:
        return {
            "cpu_model": self.cpu.cpu_model,
            "cpu_power_per_thread_w": self.cpu.power_per_thread_w,
            "cpu_tdp_w": self.cpu.tdp_w,
            "cpu_table_entry": self.cpu.matched_entry,
            "cpu_rule": self.cpu.how,
            "memory_power_per_gb_w": self.memory_power_per_gb_w,
            "memory": "resident set size"
            + (" of this process and its children" if self.poll_interval_s else ""),
        }

    def close(self) -> None:
        pass


def _process_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _own_rss_bytes() -> float:
    return float(psutil.Process().memory_info().rss)


def _tree_rss_bytes() -> float:
    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.Error:  # exited between listing and reading
            continue
    return total
