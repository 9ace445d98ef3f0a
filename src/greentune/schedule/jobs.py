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
        sites: [home]                              # first = where run-now would run it
        units: 1                                   # cores/GPUs taken from a site's capacity

Every error names the file, the job and the key, and says what to write instead.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from greentune.errors import ScheduleError
from greentune.schedule.estimate import EnergyEstimate, Profiler, resolve_estimate
from greentune.schedule.fields import check_keys, parse_duration_s, parse_time

__all__ = [
    "EnergyEstimate",
    "Job",
    "JobFile",
    "Settings",
    "Site",
    "job_argv",
    "load_jobs",
    "parse_time",
]


@dataclass(frozen=True)
class Site:
    """Where jobs may run: a grid region (its carbon source) and how many units it offers."""

    name: str
    carbon: str
    """Carbon provider spec (energy.carbon grammar), e.g. trace:DIR@GB."""
    capacity: int
    """Units (cores or GPUs) that jobs running at the same time may take together."""


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

    @property
    def is_greentune(self) -> bool:
        return self.command is None


@dataclass(frozen=True)
class Settings:
    """The ``schedule:`` section."""

    now: dt.datetime
    slot_s: float = 3600.0
    policy: str = "greenest-chunks"
    forecast: str = "seasonal-naive"
    history_s: float = 28 * 86400.0
    output_dir: str = "runs"


@dataclass(frozen=True)
class JobFile:
    path: Path
    settings: Settings
    sites: dict[str, Site]
    jobs: tuple[Job, ...]


_SETTINGS_KEYS = ("now", "slot", "policy", "forecast", "history", "output_dir")
_SITE_KEYS = ("carbon", "capacity")
_JOB_KEYS = (
    "name",
    "config",
    "overrides",
    "command",
    "energy",
    "earliest_start",
    "deadline",
    "interruptible",
    "min_chunk",
    "sites",
    "units",
)


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
    check_keys(raw, ("schedule", "sites", "jobs"), f"{file}")
    settings = _settings(raw.get("schedule") or {}, file, clock)
    sites = _sites(raw.get("sites"), file)
    jobs_raw = raw.get("jobs")
    if not isinstance(jobs_raw, list) or not jobs_raw:
        raise ScheduleError(f"{file}: 'jobs' must be a non-empty list of jobs")
    jobs, names = [], set()
    for i, item in enumerate(jobs_raw):
        job = _job(item, i, file, settings, sites, profiler, time_scale)
        if job.name in names:
            raise ScheduleError(
                f"{file}: job {i + 1} repeats the name {job.name!r}; names must differ"
            )
        names.add(job.name)
        jobs.append(job)
    return JobFile(file, settings, sites, tuple(jobs))


def _settings(raw: Any, file: Path, clock: Callable[[], dt.datetime]) -> Settings:
    if not isinstance(raw, dict):
        raise ScheduleError(f"{file}: 'schedule' must be a mapping of settings")
    where = f"{file}: schedule"
    check_keys(raw, _SETTINGS_KEYS, where)
    now = clock().astimezone(dt.UTC)
    if "now" in raw:
        now = parse_time(raw["now"], now, f"{where}.now")
    out = Settings(now=now)
    kwargs: dict[str, Any] = {}
    if "slot" in raw:
        kwargs["slot_s"] = parse_duration_s(raw["slot"], f"{where}.slot")
        if 86400 % kwargs["slot_s"]:
            raise ScheduleError(f"{where}.slot must divide a day (e.g. 15min, 30min, 1h)")
    if "history" in raw:
        kwargs["history_s"] = parse_duration_s(raw["history"], f"{where}.history")
    for key in ("policy", "forecast", "output_dir"):
        if key in raw:
            if not isinstance(raw[key], str) or not raw[key]:
                raise ScheduleError(f"{where}.{key} must be a name, got {raw[key]!r}")
            kwargs[key] = raw[key]
    return Settings(now=out.now, **kwargs)


def _sites(raw: Any, file: Path) -> dict[str, Site]:
    if not isinstance(raw, dict) or not raw:
        raise ScheduleError(
            f"{file}: 'sites' must map site names to {{carbon: SPEC, capacity: N}}, e.g. "
            "home: {carbon: static:GB, capacity: 2}"
        )
    out = {}
    for name, spec in raw.items():
        where = f"{file}: site {name!r}"
        if not isinstance(spec, dict):
            raise ScheduleError(f"{where}: expected {{carbon: SPEC, capacity: N}}")
        check_keys(spec, _SITE_KEYS, where)
        carbon = spec.get("carbon")
        if not isinstance(carbon, str) or not carbon:
            raise ScheduleError(f"{where}: 'carbon' must be a provider spec, e.g. trace:DIR@GB")
        capacity = spec.get("capacity", 1)
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ScheduleError(
                f"{where}: 'capacity' must be a whole number >= 1, got {capacity!r}"
            )
        out[str(name)] = Site(str(name), carbon, capacity)
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
    check_keys(raw, _JOB_KEYS, where)
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ScheduleError(f"{where}: 'name' must be letters, digits, '.', '_' or '-'")
    config, command = raw.get("config"), raw.get("command")
    if (config is None) == (command is None):
        raise ScheduleError(f"{where}: give exactly one of 'config' (greentune) or 'command'")
    if command is not None:
        if isinstance(command, str):
            command = command.split()
        if not isinstance(command, list) or not command:
            raise ScheduleError(f"{where}: 'command' must be a list of arguments")
    overrides = raw.get("overrides") or []
    if not isinstance(overrides, list) or not all(
        isinstance(o, str) and "=" in o for o in overrides
    ):
        raise ScheduleError(f"{where}: 'overrides' must be a list of key=value strings")
    job_sites = raw.get("sites") or list(sites)[:1]
    if isinstance(job_sites, str):
        job_sites = [job_sites]
    for site in job_sites:
        if site not in sites:
            raise ScheduleError(
                f"{where}: unknown site {site!r} in 'sites'; defined sites: {', '.join(sites)}"
            )
    units = raw.get("units", 1)
    if isinstance(units, bool) or not isinstance(units, int) or units < 1:
        raise ScheduleError(f"{where}: 'units' must be a whole number >= 1, got {units!r}")
    for site in job_sites:
        if units > sites[site].capacity:
            raise ScheduleError(
                f"{where}: needs {units} units but site {site!r} has capacity "
                f"{sites[site].capacity}; lower 'units' or raise the site's capacity"
            )
    earliest = parse_time(
        raw.get("earliest_start", "now"), settings.now, f"{where}: earliest_start"
    )
    if "deadline" not in raw:
        raise ScheduleError(f"{where}: 'deadline' is missing; e.g. deadline: +24h")
    deadline = parse_time(raw["deadline"], settings.now, f"{where}: deadline")
    interruptible = raw.get("interruptible", False)
    if not isinstance(interruptible, bool):
        raise ScheduleError(f"{where}: 'interruptible' must be true or false")
    min_chunk_s = parse_duration_s(raw.get("min_chunk", settings.slot_s), f"{where}: min_chunk")
    partial = Job(
        name=name,
        config=str(config) if config is not None else None,
        overrides=tuple(overrides),
        command=tuple(str(c) for c in command) if command is not None else None,
        estimate=EnergyEstimate(1.0, 1.0, "pending"),
        earliest_start=earliest,
        deadline=deadline,
        interruptible=interruptible,
        min_chunk_s=min_chunk_s,
        sites=tuple(job_sites),
        units=units,
    )
    estimate = resolve_estimate(raw.get("energy"), f"{where}: energy", partial, file, profiler)
    if estimate.source != "given" and time_scale != 1.0:
        estimate = EnergyEstimate(
            estimate.energy_j,
            estimate.duration_s * time_scale,
            f"{estimate.source} x{time_scale:g} (clock)",
        )
    if deadline - earliest < dt.timedelta(seconds=estimate.duration_s):
        raise ScheduleError(
            f"{where}: the window {earliest:%Y-%m-%d %H:%M} .. {deadline:%Y-%m-%d %H:%M} UTC is "
            f"shorter than the job ({estimate.duration_s / 3600:.2f} h); move the deadline later"
        )
    return Job(**{**partial.__dict__, "estimate": estimate})


def job_argv(
    job: Job, output_dir: str | Path, resume: bool, greentune: tuple[str, ...] = ("greentune",)
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
