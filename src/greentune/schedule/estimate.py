"""What a job costs: energy and wall time, given, from an earlier run's ledger, or profiled."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from greentune.energy.ledger import LEDGER_JSON, Ledger
from greentune.errors import GreentuneError, ScheduleError
from greentune.rundir import RunDir
from greentune.schedule.fields import parse_duration_s

__all__ = ["EnergyEstimate", "EnergySection", "ledger_totals", "resolve_estimate"]

J_PER_WH = 3600.0
ENERGY_FORMS = (
    "{energy_wh: 40, duration: 2h}, {from_run: runs/x} or {profile_steps: 20, steps: 600}"
)


@dataclass(frozen=True)
class EnergySection:
    """A job's ``energy:``: one of three forms (``ENERGY_FORMS``)."""

    energy_wh: float | None = None
    energy_j: float | None = None
    duration: float | str | None = None
    """With energy_wh or energy_j: how long the job runs uninterrupted."""
    from_run: str | None = None
    """A run directory whose ledger measured this job before (relative to the job file)."""
    profile_steps: int | None = None
    """Run the job for this many optimizer steps now, and scale its training to ``steps``."""
    steps: int | None = None

    @property
    def form(self) -> str:
        given = {k for k, v in vars(self).items() if v is not None}
        if given == {"from_run"}:
            return "ledger"
        if given == {"profile_steps", "steps"}:
            return "profile"
        if given in ({"energy_wh", "duration"}, {"energy_j", "duration"}):
            return "given"
        return "unknown"


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
    spec: EnergySection,
    where: str,
    file: Path,
    profile: Callable[[int], Path] | None,
    greentune: bool,
) -> EnergyEstimate:
    """The estimate ``spec`` describes; ``profile(steps)`` runs the job for that many steps and
    returns its run directory (None where no job can be run)."""
    form = spec.form
    if form == "ledger":
        run = _relative(str(spec.from_run), file)
        energy_j, duration_s = ledger_totals(run, where)
        return EnergyEstimate(energy_j, duration_s, f"ledger {run}")
    if form == "profile":
        return _profile(spec, where, profile, greentune)
    if form != "given":
        raise ScheduleError(f"{where}: expected one of {ENERGY_FORMS}")
    value = spec.energy_wh if spec.energy_wh is not None else spec.energy_j
    if value is None or value <= 0:
        raise ScheduleError(f"{where}: energy must be a positive number, got {value!r}")
    energy_j = value * (J_PER_WH if spec.energy_wh is not None else 1.0)
    return EnergyEstimate(energy_j, parse_duration_s(spec.duration, f"{where}.duration"), "given")


def _relative(value: str, file: Path) -> Path:
    path = Path(value)
    if path.is_absolute() or path.exists():
        return path
    return file.parent / path


def _ledger(run: Path, where: str) -> Ledger:
    if not (run / LEDGER_JSON).is_file():
        raise ScheduleError(
            f"{where}: {run / LEDGER_JSON} not found; run the config once with energy metering "
            "on, or give {energy_wh: ..., duration: ...}"
        )
    try:
        return RunDir(run).ledger  # also a folder that `greentune energy measure --ledger` wrote
    except GreentuneError as exc:
        raise ScheduleError(f"{where}: {exc}") from None


def ledger_totals(run: Path, where: str) -> tuple[float, float]:
    """(energy_j, duration_s) of the job in a run's ledger: its top-level ``run`` windows (a
    folder ``energy measure --ledger`` wrote: its ``measure`` windows), not the commands run
    on it later (a ``serve`` window lasts as long as the service); energy summed over the
    ranks, duration the longest rank's, since the ranks ran side by side."""
    top = [r for r in _ledger(run, where).rows if r.get("depth", 0) == 0]
    job = [r for r in top if r.get("command") == "run"]
    job = job or [r for r in top if r.get("command") == "measure"]
    energy_j = float(sum(sum(r["energy_j"].values()) for r in job))
    per_rank: dict[int, float] = defaultdict(float)
    for r in job:
        per_rank[int(r.get("rank") or 0)] += float(r["duration_s"])
    duration_s = max(per_rank.values(), default=0.0)
    if energy_j <= 0 or duration_s <= 0:
        raise ScheduleError(
            f"{where}: {run / LEDGER_JSON} records no energy; use another run or give one"
        )
    return energy_j, duration_s


def _profile(
    spec: EnergySection, where: str, profile: Callable[[int], Path] | None, greentune: bool
) -> EnergyEstimate:
    steps, total = int(spec.profile_steps or 0), int(spec.steps or 0)
    for key, value in (("profile_steps", steps), ("steps", total)):
        if value < 1:
            raise ScheduleError(f"{where}.{key} must be a whole number >= 1, got {value!r}")
    if not greentune:
        raise ScheduleError(f"{where}: profiling needs a greentune 'config'; give the energy")
    if profile is None:
        raise ScheduleError(f"{where}: profiling needs to run the job; not available here")
    run = profile(steps)
    totals = _ledger(run, where).totals()
    train = totals["by_phase"].get("train")
    if not train:
        raise ScheduleError(f"{where}: the profiling run {run} has no 'train' phase in its ledger")
    other_j = totals["all"]["energy_j"] - train["energy_j"]
    other_s = totals["all"]["duration_s"] - train["duration_s"]
    factor = total / steps
    return EnergyEstimate(
        other_j + train["energy_j"] * factor,
        other_s + train["duration_s"] * factor,
        f"profile {run} x {factor:g}",
    )
