"""The energy journal: a command's windows on disk as they happen, so a crash keeps its bill.

Each metered process appends JSON lines to ``energy-journal/<session>.rank<r>.jsonl`` in the run
directory, flushed and fsynced line by line:

    {"type": "session", id, command, started, rank, pid, host, process_started, boot_id,
     interval_s, owners {component: [source, kind]}, sources, carbon, pue}
    {"type": "open", window, parent, depth, start, energy_j}      a window began (cumulative J)
    {"type": "tick", time, energy_j}                              every ``interval_s`` and at
                                                                  every training checkpoint
    {"type": "row", ...}                                          a window closed (a ledger row)

When the command ends normally its rows go into energy.json and its journal is deleted. When
its process died, the next command on the run (``run --resume``, ``evaluate``, ...) folds the
journal into the ledger as a session marked ``recovered``. Every record is a reading of the
sources' cumulative joules at a known time (a tick; a window's opening; its closing, as its
opening's reading plus its energy), so the fold gives: the closed windows as they were, every
window still open as a partial row up to the last reading (``ok`` false), and, for the
outermost open window, one row for the gap between that reading and the death, ``kind:
estimated``: half the usual spacing of readings (at most the journal interval) at the power of
the latest readings. A crash therefore loses nothing measured before the last reading; what
came after is estimated and says so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greentune.energy.base import kind_of
from greentune.errors import EnergyError
from greentune.procs import same_process

JOURNAL_DIR = "energy-journal"
Price = Callable[[float, dt.datetime, dt.datetime], tuple[float | None, float | None]]
"""(energy J, start, end) -> (mean intensity g/kWh, emissions g)."""


def journal_path(run_dir: Path, session_id: str, rank: int) -> Path:
    return Path(run_dir) / JOURNAL_DIR / f"{session_id}.rank{rank}.jsonl"


class Journal:
    """Appends one process's records; every line reaches the disk before the call returns."""

    def __init__(self, path: Path, session: dict[str, Any]) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")
        self.error: OSError | None = None
        self.write({"type": "session", **session})

    def write(self, record: dict[str, Any]) -> None:
        if self._fh.closed:
            return
        try:
            self._fh.write(json.dumps(record, default=str) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            # A full disk stops the journal, not the work: the command meets the same error at
            # its next real write (a checkpoint, the ledger) and says so there.
            self.error = exc
            with contextlib.suppress(OSError):
                self._fh.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


@dataclass
class JournalFile:
    """One journal as read back: the session, its closed rows, its open windows, its ticks."""

    path: Path
    session: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    open: dict[str, dict[str, Any]] = field(default_factory=dict)
    readings: list[dict[str, Any]] = field(default_factory=list)
    """Cumulative joules per component at known times, oldest first: every tick, every
    window's opening, and every closing (its opening's reading plus its energy)."""
    last_seen: str = ""
    """The time of the newest record (UTC, ISO 8601)."""

    def alive(self, lock_held: bool) -> bool:
        """Is the process that writes it still running? On this host its pid and start time
        say; a process on another host (a torchrun rank) counts as alive while the run's lock
        is held."""
        if self.session.get("host") != socket.gethostname():
            return lock_held
        return same_process(
            int(self.session["pid"]),
            self.session.get("process_started"),
            self.session.get("boot_id"),
        )

    def recovered_rows(self, price: Price | None) -> list[dict[str, Any]]:
        """Closed rows, partial rows for the windows open at the last reading, and the
        estimate of the interval between that reading and the death."""
        out = list(self.rows)
        if not self.readings:
            return out
        last = self.readings[-1]
        end = dt.datetime.fromisoformat(last["time"])
        partial = []
        for w in self.open.values():
            start = dt.datetime.fromisoformat(w["start"])
            if start >= end:
                continue  # opened at the last reading: nothing measured inside it yet
            now_j = last["energy_j"]
            energy = {c: max(0.0, now_j.get(c, 0.0) - j) for c, j in w["energy_j"].items()}
            row = self._row(w, start, end, energy, price)
            row["extra"]["crashed"] = f"energy up to the journal's last reading at {last['time']}"
            partial.append(row)
        out += partial
        outer = next((w for w in self.open.values() if w["depth"] == 0), None)
        if outer is not None:
            out.append(self._lost(outer, end, price))
        return out

    def _lost(self, outer: dict[str, Any], end: dt.datetime, price: Price | None) -> dict[str, Any]:
        """The death came some time after the last reading: expect half the usual spacing of
        readings (at most the journal interval), at the power of the latest readings."""
        interval_s = float(self.session.get("interval_s") or 0.0)
        spacing_s = self._spacing_s()
        gap_s = min(interval_s, spacing_s) if interval_s > 0 else spacing_s
        lost_s = gap_s / 2
        watts = self._last_power()
        energy = {c: w * lost_s for c, w in watts.items()}
        row = self._row(
            {**outer, "start": end.isoformat()},
            end,
            end + dt.timedelta(seconds=lost_s),
            energy,
            price,
        )
        row["kind"] = "estimated"
        row["sources"] = dict.fromkeys(energy, "estimate")
        row["extra"]["estimated"] = (
            f"between the journal's last reading and the crash: half the usual spacing of "
            f"its readings ({lost_s:.3g} s), at the power of the latest readings"
        )
        return row

    def _spacing_s(self) -> float:
        """Median seconds between the last (up to 10) distinct reading times."""
        times = [dt.datetime.fromisoformat(r["time"]) for r in self.readings[-11:]]
        gaps = sorted(
            g for a, b in itertools.pairwise(times) if (g := (b - a).total_seconds()) > 1e-3
        )
        return gaps[len(gaps) // 2] if gaps else 0.0

    def _last_power(self) -> dict[str, float]:
        """W per component from the latest reading back to one at least 1 s earlier (else the
        first): what the process drew just before it died."""
        last = self.readings[-1]
        t_last = dt.datetime.fromisoformat(last["time"])
        first = self.readings[0]
        for r in reversed(self.readings[:-1]):
            if (t_last - dt.datetime.fromisoformat(r["time"])).total_seconds() >= 1.0:
                first = r
                break
        seconds = (t_last - dt.datetime.fromisoformat(first["time"])).total_seconds()
        return {
            c: max(0.0, j - first["energy_j"].get(c, 0.0)) / seconds if seconds > 0 else 0.0
            for c, j in last["energy_j"].items()
        }

    def _row(
        self,
        w: dict[str, Any],
        start: dt.datetime,
        end: dt.datetime,
        energy: dict[str, float],
        price: Price | None,
    ) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        intensity, grams = None, None
        if price is not None:
            try:
                intensity, grams = price(sum(energy.values()), start, end)
            except EnergyError as exc:  # as the meter does: the energy is kept, unpriced
                extra["pricing_error"] = str(exc)
        owners: dict[str, list[str]] = self.session.get("owners") or {}
        return {
            "window": w["window"],
            "phase": w["window"].split("/", 1)[0],
            "parent": w["parent"],
            "depth": w["depth"],
            "command": self.session["command"],
            "rank": self.session["rank"],
            "start": start.isoformat(),
            "end": end.isoformat(),
            "duration_s": (end - start).total_seconds(),
            "energy_j": energy,
            "sources": {c: owners.get(c, ["?", "model"])[0] for c in energy},
            "kind": kind_of(owners.get(c, ["?", "model"])[1] for c in energy) or "mixed",
            "intensity_g_per_kwh": intensity,
            "emissions_g": grams,
            "pue": self.session.get("pue", 1.0),
            "ok": False,
            "extra": extra,
        }

    def ledger_session(self) -> dict[str, Any]:
        """The session entry of a recovered journal in energy.json."""
        keep = ("id", "command", "started", "sources", "carbon", "pue", "pid", "host")
        out = {k: self.session[k] for k in keep if k in self.session}
        out["ranks"] = [self.session["rank"]]
        out["recovered"] = (
            f"the process died; rows read back from its energy journal, last entry at "
            f"{self.last_seen}"
        )
        return out


def read_journal(path: Path) -> JournalFile | None:
    """A journal file, or None when it holds no session line. A torn last line (the crash
    came mid-write) is ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    if not records or records[0].get("type") != "session":
        return None
    jf = JournalFile(path, {k: v for k, v in records[0].items() if k != "type"})
    jf.last_seen = str(jf.session.get("started", ""))
    for rec in records[1:]:
        kind = rec.pop("type", None)
        if kind == "open":
            jf.open[rec["window"]] = rec
            jf.readings.append({"time": rec["start"], "energy_j": rec["energy_j"]})
        elif kind == "row":
            jf.rows.append(rec)
            opened = jf.open.pop(rec["window"], None)
            if opened is not None:
                at_close = {
                    c: j + rec["energy_j"].get(c, 0.0) for c, j in opened["energy_j"].items()
                }
                jf.readings.append({"time": rec["end"], "energy_j": at_close})
        elif kind == "tick":
            jf.readings.append({"time": rec["time"], "energy_j": rec["energy_j"]})
    jf.readings.sort(key=lambda r: r["time"])
    if jf.readings:
        jf.last_seen = max(jf.last_seen, jf.readings[-1]["time"])
    return jf


def read_journals(run_dir: Path) -> list[JournalFile]:
    folder = Path(run_dir) / JOURNAL_DIR
    if not folder.is_dir():
        return []
    found = (read_journal(p) for p in sorted(folder.glob("*.jsonl")))
    return [jf for jf in found if jf is not None]
