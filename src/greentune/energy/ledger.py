"""The ledger: every metered window of a run, in ``energy.json`` and ``energy.csv``.

    energy.json
      schema_version   1
      sessions         one per command that metered this run: id, command, started, ranks,
                       journals, meter details (sources and their constants, carbon provider,
                       PUE); ``recovered`` when read back from the journal of a dead process
      rows             one per window (see WindowResult): window, phase, parent, depth, command,
                       rank, start, end (UTC ISO 8601), duration_s, energy_j {component: J},
                       sources {component: source}, kind (measured|model|mixed|estimated),
                       intensity_g_per_kwh, emissions_g, pue, ok
      totals           by_phase {phase: {duration_s, energy_j, energy_<component>_j,
                       emissions_g, windows}} and all (the same over every phase)

Totals add up top-level windows only (depth 0): nested windows break their parent down and
would otherwise be counted twice. energy.csv has the same rows with one ``energy_<component>_j``
column per component. Later commands (evaluate, predict, compress, ...) append to the ledger;
both files are rewritten atomically each time. While a command runs its windows are in its
journal (greentune.energy.journal); ``fold_journals`` adds those of dead processes.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

from greentune import faults
from greentune.energy.journal import JOURNAL_DIR, JournalFile, Price, read_journals
from greentune.energy.meter import Meter, WindowResult
from greentune.errors import EnergyError
from greentune.io import write_csv, write_json
from greentune.runlock import live_holder

SCHEMA_VERSION = 1
LEDGER_JSON = "energy.json"
ROW_KEYS = (
    "window",
    "phase",
    "depth",
    "command",
    "start",
    "duration_s",
    "energy_j",
    "emissions_g",
    "kind",
)
"""What every row must hold for the totals and the bills (emissions_g may be null)."""
LEDGER_CSV = "energy.csv"


class Ledger:
    """Rows of one run (all commands, all ranks) and their totals."""

    def __init__(self, rows: list[dict[str, Any]] | None = None) -> None:
        self.rows: list[dict[str, Any]] = list(rows or [])
        self.sessions: list[dict[str, Any]] = []

    @classmethod
    def load(cls, run_dir: Path) -> Ledger:
        path = Path(run_dir) / LEDGER_JSON
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())
            ledger = cls(data["rows"])
            ledger.sessions = list(data.get("sessions", []))
            ledger._drop_self_recoveries()
            for i, row in enumerate(ledger.rows):
                missing = [k for k in ROW_KEYS if k not in row]
                if missing or not isinstance(row["energy_j"], dict):
                    raise KeyError(f"row {i + 1} lacks {', '.join(missing) or 'energy_j values'}")
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise EnergyError(
                f"{path}: not a greentune energy ledger ({exc}); move it aside to start a new one"
            ) from None
        return ledger

    def _drop_self_recoveries(self) -> None:
        """Repair ledgers a clock step damaged (before greentune.procs read start times from
        /proc): a live command's journal was taken for a dead process's and folded, by itself
        or by another command, so its session is there twice, once as ``recovered``. Drop the
        twin and, among its command's rows, the copies of closed windows, the partial rows of
        windows the command closed later, and the estimate of a death that never came."""
        done = {st for s in self.sessions if "recovered" not in s for st in s.get("journals", [])}
        twins = [
            s
            for s in self.sessions
            if "recovered" in s and s.get("journals") and set(s["journals"]) <= done
        ]
        if not twins:
            return
        self.sessions = [s for s in self.sessions if not any(s is t for t in twins)]
        scope = {(t.get("command"), rank) for t in twins for rank in t.get("ranks", [0])}

        def where(row: dict[str, Any]) -> tuple[Any, ...]:
            return row["command"], row.get("rank", 0), row["window"]

        closed = [
            r
            for r in self.rows
            if r.get("kind") != "estimated" and "crashed" not in (r.get("extra") or {})
        ]
        spans = defaultdict(list)
        for r in closed:
            spans[where(r)].append((r["start"], r.get("end") or r["start"]))
        seen: set[str] = set()
        unique = []
        for row in self.rows:
            if (row["command"], row.get("rank", 0)) in scope:
                key = json.dumps(row, sort_keys=True)
                if key in seen:
                    continue
                seen.add(key)
                partial = "crashed" in (row.get("extra") or {}) or row.get("kind") == "estimated"
                # ISO 8601 UTC strings of one format: their order is the times' order
                if partial and any(a <= row["start"] <= b for a, b in spans[where(row)]):
                    continue
            unique.append(row)
        self.rows = unique

    def add(self, result: WindowResult) -> None:
        self.rows.append(result.to_dict())

    def add_session(
        self,
        meter: Meter,
        started: str,
        results: list[WindowResult] | None = None,
        journals: list[str] | None = None,
        session_id: str | None = None,
    ) -> None:
        """The meter's details and its windows (or ``results``: every rank's windows);
        ``journals`` names the journal files (stems) whose rows these are."""
        rows = meter.results if results is None else results
        self.sessions.append(
            {
                **({"id": session_id} if session_id else {}),
                "command": meter.command,
                "started": started,
                "ranks": sorted({r.rank for r in rows}) or [meter.rank],
                **({"journals": journals} if journals else {}),
                **meter.details(),
            }
        )
        for result in sorted(rows, key=lambda r: (r.start, r.rank, r.depth)):
            self.add(result)

    def fold_journals(
        self, run_dir: Path, price: Price | None = None, live: bool = False
    ) -> list[JournalFile]:
        """Add the journals of dead processes not yet in this ledger, as recovered sessions
        (priced with ``price`` when given; else their emissions are null); with ``live``, also
        the closed windows of commands still running (for reading, never for saving).
        Returns the dead processes' journals it added."""
        listed = {stem for s in self.sessions for stem in s.get("journals", [])}
        lock_held = live_holder(run_dir) is not None
        folded = []
        for jf in read_journals(run_dir):
            if jf.path.stem in listed:
                continue
            if jf.alive(lock_held):
                if live:
                    self.rows.extend(jf.rows)
                continue
            self.sessions.append({**jf.ledger_session(), "journals": [jf.path.stem]})
            self.rows.extend(jf.recovered_rows(price))
            folded.append(jf)
        if folded:
            self.sessions.sort(key=lambda s: str(s.get("started", "")))
        return folded

    def components(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self.rows:
            seen.update(dict.fromkeys(row["energy_j"]))
        return list(seen)

    def totals(self, rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        top = [r for r in (self.rows if rows is None else rows) if r["depth"] == 0]
        by_phase: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in top:
            by_phase[row["phase"]].append(row)
        return {
            "by_phase": {phase: summarise(rs) for phase, rs in by_phase.items()},
            "all": summarise(top),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "sessions": self.sessions,
            "rows": self.rows,
            "totals": self.totals(),
        }

    def to_frame(self) -> pd.DataFrame:
        comps = self.components()
        flat = []
        for row in self.rows:
            out = {k: v for k, v in row.items() if k not in ("energy_j", "sources", "extra")}
            out["energy_j"] = sum(row["energy_j"].values())
            for comp in comps:
                out[f"energy_{comp}_j"] = row["energy_j"].get(comp)
                out[f"source_{comp}"] = row["sources"].get(comp)
            flat.append(out)
        return pd.DataFrame(flat)

    def save(self, run_dir: Path) -> None:
        faults.point("ledger-save")
        write_json(Path(run_dir) / LEDGER_JSON, self.to_json())
        write_csv(Path(run_dir) / LEDGER_CSV, self.to_frame())


def remove_journals(run_dir: Path, stems: list[str]) -> None:
    """Delete journal files whose rows are now in energy.json (the folder too once empty)."""
    folder = Path(run_dir) / JOURNAL_DIR
    for stem in stems:
        (folder / f"{stem}.jsonl").unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty (another process's journal) or gone
        folder.rmdir()


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum of duration, energy (total and per component) and emissions over rows."""
    energy: dict[str, float] = defaultdict(float)
    for row in rows:
        for comp, joules in row["energy_j"].items():
            energy[comp] += joules
    grams = [r["emissions_g"] for r in rows]
    out: dict[str, Any] = {
        "windows": len(rows),
        "duration_s": sum(r["duration_s"] for r in rows),
        "energy_j": sum(energy.values()),
        **{f"energy_{c}_j": j for c, j in energy.items()},
        "emissions_g": None if any(g is None for g in grams) else sum(grams),
        "kinds": sorted({r["kind"] for r in rows if r["kind"]}),  # "": a row of no energy
    }
    return out
