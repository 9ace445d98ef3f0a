"""The job file: sites with their carbon source and capacity, and the jobs to place on them.

    schedule:                      # all optional
      now: 2024-03-04T08:00Z       # plan as if it were this time (default: the clock)
      slot: 1h                     # planning resolution
      policy: greenest-chunks      # registry name (schedule.policies)
      forecast: seasonal-naive     # registry name (schedule.forecast)
      history: 28D                 # trace history the forecaster learns from
      output_dir: runs             # where greentune jobs write their run directories
    sites:
      home: {carbon: "trace:../shared/data/carbon/electricitymaps@GB", capacity: 2}
    jobs:
      - name: vic-lora
        config: configs/forecast/vic_lora.yaml     # or command: [python, train.py]
        overrides: [train.epochs=2]
        energy: {energy_wh: 40, duration: 2h}      # or {from_run: runs/x}
                                                   # or {profile_steps: 20, steps: 600}
        earliest_start: now                        # ISO time with zone, now, or +DURATION
        deadline: +24h                             # relative times count from schedule.now
        interruptible: true
        min_chunk: 1h
        restart: 2min                              # a launch's time before work resumes
        sites: [home]                              # first = where run-now would run it
        units: 1                                   # cores/GPUs taken from a site's capacity

The sections are frozen dataclasses built by ``greentune.typed.build``, the config system of
run configs and compress options: types are checked there, and every error names the file, the
job and the key, and says what to write instead.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from greentune.errors import ConfigError, ScheduleError
from greentune.schedule.estimate import (
    ENERGY_FORMS,
    EnergyEstimate,
    EnergySection,
    resolve_estimate,
)
from greentune.schedule.fields import parse_duration_s, parse_time
from greentune.typed import build

__all__ = [
    "EnergyEstimate",
    "Job",
    "JobFile",
    "Launch",
    "Settings",
    "Site",
    "job_argv",
    "load_jobs",
    "parse_time",
]

Time = str | dt.datetime
"""A time in a job file: ISO 8601 with a zone (YAML may read it as a datetime), ``now``, or
``+DURATION`` after ``schedule.now``."""


# ----------------------------------------------------------------------------- file sections


@dataclass(frozen=True)
class ScheduleSection:
    """``schedule:``: how to plan."""

    now: Time | None = None
    """Plan as if it were this time; None: the clock."""
    slot: float | str = "1h"
    """Planning resolution; must divide a day (15min, 30min, 1h)."""
    policy: str = "greenest-chunks"
    """Registry name: run-now, lowest-window, greenest-chunks, spatial."""
    forecast: str = "seasonal-naive"
    """Carbon forecaster: seasonal-naive, weekly-naive, lightgbm, noisy:0.05, perfect,
    greentune:RUN."""
    history: float | str = "28D"
    """Trace history the forecaster learns from."""
    output_dir: str = "runs"
    """Where greentune jobs write their run directories."""


@dataclass(frozen=True)
class SiteSection:
    """A site: a grid region (its carbon source) and how many units it offers."""

    carbon: str
    """Carbon provider spec (the energy.carbon grammar), e.g. trace:DIR@GB."""
    capacity: int = 1
    """Units (cores or GPUs) that jobs running at the same time may take together."""


@dataclass(frozen=True)
class JobSection:
    """One entry of ``jobs:``."""

    name: str
    """Letters, digits, '.', '_' or '-'; greentune jobs write ``output_dir/<name>``."""
    energy: EnergySection
    deadline: Time
    config: str | None = None
    """A greentune run config (give this or ``command``)."""
    overrides: tuple[str, ...] | None = None
    """``key=value`` overrides of the config."""
    command: str | tuple[str, ...] | None = None
    """Any other command: a list of arguments (or one string split on spaces)."""
    earliest_start: Time = "now"
    interruptible: bool = False
    """A greentune job pauses at a checkpoint (SIGTERM); a command is stopped (SIGSTOP)."""
    min_chunk: float | str | None = None
    """Shortest piece an interruptible job is cut into; None: one slot."""
    restart: float | str | None = None
    """A greentune job's time from a launch to work resuming (interpreter, imports, data and
    checkpoint loaded again), paid by every chunk; the ledger does not see it. None: free."""
    sites: tuple[str, ...] | None = None
    """Where it may run, the first where run-now would run it; None: the first site."""
    units: int = 1


@dataclass(frozen=True)
class JobFileSection:
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    sites: dict[str, SiteSection] = field(default_factory=dict)
    jobs: tuple[dict[str, Any], ...] = ()
    """Built one by one, so an error names the job."""


# ------------------------------------------------------------------ what the planner uses


@dataclass(frozen=True)
class Site:
    """Where jobs may run: a grid region (its carbon source) and how many units it offers."""

    name: str
    carbon: str
    """Carbon provider spec (energy.carbon grammar), e.g. trace:DIR@GB."""
    capacity: int
    """Units (cores or GPUs) that jobs running at the same time may take together."""


class Launchable(Protocol):
    """What ``job_argv`` reads: a ``Job`` or a ``Launch``."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> str | None: ...

    @property
    def overrides(self) -> tuple[str, ...]: ...

    @property
    def command(self) -> tuple[str, ...] | None: ...


@dataclass(frozen=True)
class Launch:
    """How a job starts: a greentune config with overrides, or any command."""

    name: str
    config: str | None
    overrides: tuple[str, ...]
    command: tuple[str, ...] | None

    @property
    def is_greentune(self) -> bool:
        return self.command is None


Profiler = Callable[[Launch, int], Path]
"""(job, steps) -> the run directory of a short profiling run of that job."""


@dataclass(frozen=True)
class Job:
    """One job: a greentune config (with overrides) or any command, and its constraints."""

    name: str
    config: str | None
    overrides: tuple[str, ...]
    command: tuple[str, ...] | None
    estimate: EnergyEstimate
    earliest_start: dt.datetime
    deadline: dt.datetime
    interruptible: bool
    min_chunk_s: float
    sites: tuple[str, ...]
    units: int
    restart_s: float = 0.0
    """Time from each launch to work resuming, on the plan's clock."""

    @property
    def is_greentune(self) -> bool:
        return self.command is None

    @property
    def launch(self) -> Launch:
        return Launch(self.name, self.config, self.overrides, self.command)


@dataclass(frozen=True)
class Settings:
    """The ``schedule:`` section, resolved: times aware, durations in seconds."""

    now: dt.datetime
    slot_s: float
    policy: str
    forecast: str
    history_s: float
    output_dir: str


@dataclass(frozen=True)
class JobFile:
    path: Path
    settings: Settings
    sites: dict[str, Site]
    jobs: tuple[Job, ...]


# ----------------------------------------------------------------------------- loading


def load_jobs(
    path: str | Path,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    profiler: Profiler | None = None,
    time_scale: float = 1.0,
) -> JobFile:
    """Read and validate a job file; energy estimates are resolved (ledgers read, profiled).

    ``time_scale``: simulated seconds per real second (the executor's --speedup). Durations
    measured in real time (ledgers, profiling runs) are stretched by it, so they mean the same
    on the simulated clock as the durations written in the file.
    """
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise ScheduleError(f"cannot read job file {file}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ScheduleError(f"{file} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ScheduleError(f"{file}: expected a mapping with 'sites' and 'jobs' at the top")
    for name, site in (
        (raw.get("sites") or {}).items() if isinstance(raw.get("sites"), dict) else ()
    ):
        if isinstance(site, dict) and "carbon" not in site:
            raise ScheduleError(
                f"{file}: site {name!r}: 'carbon' is missing; give a provider spec, e.g. "
                "carbon: trace:DIR@GB"
            )
    top = _section(JobFileSection, raw, f"{file}")
    settings = _settings(top.schedule, file, clock)
    sites = _sites(top.sites, file)
    if not top.jobs:
        raise ScheduleError(f"{file}: 'jobs' must be a non-empty list of jobs")
    jobs: list[Job] = []
    for i, item in enumerate(top.jobs):
        job = _job(item, i, file, settings, sites, profiler, time_scale)
        if any(j.name == job.name for j in jobs):
            raise ScheduleError(
                f"{file}: job {i + 1} repeats the name {job.name!r}; names must differ"
            )
        jobs.append(job)
    return JobFile(file, settings, sites, tuple(jobs))


def _section(cls: type, raw: Any, where: str) -> Any:
    """``cls`` built from ``raw``; config errors become schedule errors naming ``where``."""
    try:
        return build(cls, raw)
    except ConfigError as exc:
        raise ScheduleError(f"{where}: {exc}") from None


def _settings(s: ScheduleSection, file: Path, clock: Callable[[], dt.datetime]) -> Settings:
    where = f"{file}: schedule"
    now = clock().astimezone(dt.UTC)
    if s.now is not None:
        now = parse_time(s.now, now, f"{where}.now")
    slot_s = parse_duration_s(s.slot, f"{where}.slot")
    if 86400 % slot_s:
        raise ScheduleError(f"{where}.slot must divide a day (e.g. 15min, 30min, 1h)")
    for key in ("policy", "forecast", "output_dir"):
        if not getattr(s, key):
            raise ScheduleError(f"{where}.{key} must be a name, got {getattr(s, key)!r}")
    return Settings(
        now=now,
        slot_s=slot_s,
        policy=s.policy,
        forecast=s.forecast,
        history_s=parse_duration_s(s.history, f"{where}.history"),
        output_dir=s.output_dir,
    )


def _sites(raw: dict[str, SiteSection], file: Path) -> dict[str, Site]:
    if not raw:
        raise ScheduleError(
            f"{file}: 'sites' must map site names to {{carbon: SPEC, capacity: N}}, e.g. "
            "home: {carbon: static:GB, capacity: 2}"
        )
    out = {}
    for name, spec in raw.items():
        where = f"{file}: site {name!r}"
        if not spec.carbon:
            raise ScheduleError(f"{where}: 'carbon' must be a provider spec, e.g. trace:DIR@GB")
        if spec.capacity < 1:
            raise ScheduleError(
                f"{where}: 'capacity' must be a whole number >= 1, got {spec.capacity!r}"
            )
        out[name] = Site(name, spec.carbon, spec.capacity)
    return out


def _job(
    raw: Any,
    index: int,
    file: Path,
    settings: Settings,
    sites: dict[str, Site],
    profiler: Profiler | None,
    time_scale: float = 1.0,
) -> Job:
    label = raw.get("name") if isinstance(raw, dict) else None
    where = f"{file}: job {index + 1}" + (f" ({label})" if label else "")
    if not isinstance(raw, dict):
        raise ScheduleError(f"{where}: expected a mapping with name, energy, deadline, ...")
    for key, example in (("deadline", "deadline: +24h"), ("energy", ENERGY_FORMS)):
        if key not in raw:
            raise ScheduleError(f"{where}: '{key}' is missing; e.g. {example}")
    spec: JobSection = _section(JobSection, raw, where)
    overrides = spec.overrides or ()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", spec.name):
        raise ScheduleError(f"{where}: 'name' must be letters, digits, '.', '_' or '-'")
    command = tuple(spec.command.split()) if isinstance(spec.command, str) else spec.command
    if (spec.config is None) == (command is None):
        raise ScheduleError(f"{where}: give exactly one of 'config' (greentune) or 'command'")
    if command is not None and not command:
        raise ScheduleError(f"{where}: 'command' must be a list of arguments")
    if not all("=" in o for o in overrides):
        raise ScheduleError(f"{where}: 'overrides' must be a list of key=value strings")
    job_sites = spec.sites or tuple(sites)[:1]
    for site in job_sites:
        if site not in sites:
            raise ScheduleError(
                f"{where}: unknown site {site!r} in 'sites'; defined sites: {', '.join(sites)}"
            )
    if spec.units < 1:
        raise ScheduleError(f"{where}: 'units' must be a whole number >= 1, got {spec.units!r}")
    for site in job_sites:
        if spec.units > sites[site].capacity:
            raise ScheduleError(
                f"{where}: needs {spec.units} units but site {site!r} has capacity "
                f"{sites[site].capacity}; lower 'units' or raise the site's capacity"
            )
    earliest = parse_time(spec.earliest_start, settings.now, f"{where}: earliest_start")
    deadline = parse_time(spec.deadline, settings.now, f"{where}: deadline")
    min_chunk = spec.min_chunk if spec.min_chunk is not None else settings.slot_s
    launch = Launch(spec.name, spec.config, overrides, command)
    profile = None
    if profiler is not None:
        profile = lambda steps: profiler(launch, steps)  # noqa: E731
    estimate = resolve_estimate(spec.energy, f"{where}: energy", file, profile, launch.is_greentune)
    if estimate.source != "given" and time_scale != 1.0:
        estimate = EnergyEstimate(
            estimate.energy_j,
            estimate.duration_s * time_scale,
            f"{estimate.source} x{time_scale:g} (clock)",
        )
    restart = spec.restart
    restart_s = parse_duration_s(restart, f"{where}: restart") if restart is not None else 0.0
    if restart_s and command is not None:
        raise ScheduleError(
            f"{where}: 'restart' is for greentune jobs, which are stopped at a checkpoint and "
            "launched again; a command is paused (SIGSTOP) and continues at once: remove it"
        )
    if deadline - earliest < dt.timedelta(seconds=estimate.duration_s + restart_s):
        raise ScheduleError(
            f"{where}: the window {earliest:%Y-%m-%d %H:%M} .. {deadline:%Y-%m-%d %H:%M} UTC is "
            f"shorter than the job ({(estimate.duration_s + restart_s) / 3600:.2f} h with its "
            "start); move the deadline later"
        )
    return Job(
        name=spec.name,
        config=spec.config,
        overrides=overrides,
        command=command,
        estimate=estimate,
        earliest_start=earliest,
        deadline=deadline,
        interruptible=spec.interruptible,
        min_chunk_s=parse_duration_s(min_chunk, f"{where}: min_chunk"),
        sites=job_sites,
        units=spec.units,
        restart_s=restart_s,
    )


def job_argv(
    job: Launchable,
    output_dir: str | Path,
    resume: bool,
    greentune: tuple[str, ...] = ("greentune",),
) -> list[str]:
    """The command line that starts (or, for greentune jobs, resumes) a job.

    A greentune job writes ``output_dir/<job name>``; resuming continues it from its last
    checkpoint. Any other command is started as given (it cannot resume: it is paused with
    SIGSTOP/SIGCONT by the executor instead).
    """
    if job.command is not None:
        return list(job.command)
    run_dir = Path(output_dir) / job.name
    if resume:
        return [*greentune, "run", "--resume", str(run_dir)]
    config = [job.config] if job.config else []
    return [
        *greentune,
        "run",
        *config,
        *job.overrides,
        f"name={job.name}",
        f"output_dir={output_dir}",
    ]
