"""Emissions of an executed plan: each run's ledger rows (measured or modelled, as its ledger
says) priced by its site's trace.

The ledger stamps rows with real (wall-clock) times; under a simulated clock they are mapped to
simulated time with the executor's origin and speedup, then priced at the site the plan chose.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from greentune.energy.base import kind_of
from greentune.energy.carbon import emissions_g, parse_provider_spec
from greentune.energy.ledger import LEDGER_JSON
from greentune.errors import GreentuneError, ScheduleError
from greentune.rundir import RunDir

__all__ = ["measured_emissions"]


def measured_emissions(
    plan: dict[str, Any], state: dict[str, Any], output_dir: Path
) -> dict[str, Any]:
    """Per done greentune job: its ledger's energy_wh (of energy_kind: measured, model or
    mixed) and emissions_g priced at the chosen site, next to the plan's expected_g."""
    origin_sim = dt.datetime.fromisoformat(state["sim_origin"])
    origin_real, speedup = float(state["real_origin"]), float(state["speedup"])
    out: dict[str, Any] = {}
    for row in plan["jobs"]:
        if state["jobs"][row["name"]]["status"] != "done":
            continue
        run = output_dir / row["name"]
        if not (run / LEDGER_JSON).is_file():
            continue  # not a greentune run, or metering was off
        try:
            rows = [r for r in RunDir(run).ledger.rows if r["depth"] == 0]
        except GreentuneError as exc:
            raise ScheduleError(str(exc)) from None
        provider = parse_provider_spec(plan["sites"][row["site"]]["carbon"])
        grams = energy = 0.0
        for r in rows:
            start, end = (
                origin_sim + (dt.datetime.fromisoformat(r[k]) - _real(origin_real)) * speedup
                for k in ("start", "end")
            )
            joules = sum(r["energy_j"].values())
            grams += emissions_g(joules, start, max(end, start), provider)[0]
            energy += joules
        expected = row["expected_g"]
        out[row["name"]] = {
            "energy_wh": energy / 3600.0,
            "energy_kind": kind_of(r["kind"] for r in rows),
            "planned_energy_wh": row["energy_wh"],
            "emissions_g": grams,
            "expected_g": expected,
            "ratio": grams / expected if expected else None,
        }
    return out


def _real(epoch_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC)
