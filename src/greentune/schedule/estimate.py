"""What a job costs: energy and wall time, given, from an earlier run's ledger, or profiled."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from greentune.errors import ScheduleError
from greentune.schedule.fields import check_keys, parse_duration_s

if TYPE_CHECKING:
    from greentune.schedule.jobs import Job

__all__ = ["EnergyEstimate", "Profiler", "ledger_totals", "resolve_estimate"]

J_PER_WH = 3600.0
Profiler = Callable[["Job", int], Path]
"""(job, steps) -> the run directory of a short profiling run of that job."""
ENERGY_FORMS = (
    "{energy_wh: 40, duration: 2h}, {from_run: runs/x} or {profile_steps: 20, steps: 600}"
)


@dataclass(frozen=True)
class EnergyEstimate:
    """What one job costs: energy and wall time when it runs uninterrupted."""

    energy_j: float
    duration_s: float
    source: str
    """'given', 'ledger <run dir>' or 'profile <run dir> x <factor>'."""

    @property
    def power_w(self) -> float:
        return self.energy_j / self.duration_s


def resolve_estimate(
    raw: Any, where: str, job: Job, file: Path, profiler: Profiler | None
) -> EnergyEstimate:
    if not isinstance(raw, dict):
        raise ScheduleError(f"{where}: expected one of {ENERGY_FORMS}")
    if "from_run" in raw:
        check_keys(raw, ("from_run",), where)
        run = _relative(raw["from_run"], file)
        energy_j, duration_s = ledger_totals(run, where)
        return EnergyEstimate(energy_j, duration_s, f"ledger {run}")
    if "profile_steps" in raw:
        check_keys(raw, ("profile_steps", "steps"), where)
        return _profile(raw, where, job, profiler)
    check_keys(raw, ("energy_wh", "energy_j", "duration"), where)
    if ("energy_wh" in raw) == ("energy_j" in raw) or "duration" not in raw:
        raise ScheduleError(f"{where}: expected one of {ENERGY_FORMS}")
    value = raw.get("energy_wh", raw.get("energy_j"))
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ScheduleError(f"{where}: energy must be a positive number, got {value!r}")
    energy_j = float(value) * (J_PER_WH if "energy_wh" in raw else 1.0)
    return EnergyEstimate(energy_j, parse_duration_s(raw["duration"], f"{where}.duration"), "given")


def _relative(value: Any, file: Path) -> Path:
    path = Path(str(value))
    if path.is_absolute() or path.exists():
        return path
    return file.parent / path


def ledger_totals(run: Path, where: str) -> tuple[float, float]:
    """(energy_j, duration_s) of every top-level window in a run's energy.json."""
    path = Path(run) / "energy.json"
    try:
        totals = json.loads(path.read_text())["totals"]["all"]
        energy_j, duration_s = float(totals["energy_j"]), float(totals["duration_s"])
    except OSError:
        raise ScheduleError(
            f"{where}: {path} not found; run the config once with energy metering on, or give "
            "{energy_wh: ..., duration: ...}"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ScheduleError(f"{where}: {path} is not a greentune energy ledger ({exc})") from None
    if energy_j <= 0 or duration_s <= 0:
        raise ScheduleError(f"{where}: {path} records no energy; use another run or give one")
    return energy_j, duration_s


def _profile(
    raw: dict[str, Any], where: str, job: Job, profiler: Profiler | None
) -> EnergyEstimate:
    steps, total = raw.get("profile_steps"), raw.get("steps")
    for key, value in (("profile_steps", steps), ("steps", total)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ScheduleError(f"{where}.{key} must be a whole number >= 1, got {value!r}")
    if not job.is_greentune:
        raise ScheduleError(f"{where}: profiling needs a greentune 'config'; give the energy")
    if profiler is None:
        raise ScheduleError(f"{where}: profiling needs to run the job; not available here")
    steps_n, total_n = int(steps), int(total)  # type: ignore[arg-type]
    run = profiler(job, steps_n)
    ledger = json.loads((run / "energy.json").read_text())["totals"]
    train = ledger["by_phase"].get("train")
    if not train:
        raise ScheduleError(f"{where}: the profiling run {run} has no 'train' phase in its ledger")
    other_j = ledger["all"]["energy_j"] - train["energy_j"]
    other_s = ledger["all"]["duration_s"] - train["duration_s"]
    factor = total_n / steps_n
    return EnergyEstimate(
        other_j + train["energy_j"] * factor,
        other_s + train["duration_s"] * factor,
        f"profile {run} x {factor:g}",
    )
