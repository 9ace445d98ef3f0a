"""Replay a year of a carbon trace with a job mix and a forecast: emissions of every policy.

The job mix is Let's Wait Awhile's ML-training scenario (Wiesner et al., Middleware 2021,
``simulate.py::ml_experiment`` of dos-group/lets-wait-awhile): 3,387 jobs a year, spread
uniformly (multinomial) over the workdays, each arriving at a random half hour between 09:00
and 17:00 local time, lasting a uniform 4 h .. 89.5 h in half hours, due the next workday at
09:00 after the time it would finish if it ran at once (a finish between 09:00 and 17:00 on a
workday gives no slack). Jobs draw one unit; sites have unlimited capacity, as in LWA, unless a
capacity is given.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from greentune.errors import ScheduleError
from greentune.schedule.forecast import Forecaster, forecast_error
from greentune.schedule.policies import POLICIES, Choice, Request, SiteView

__all__ = [
    "ZONE_TIMEZONES",
    "LwaScenario",
    "SimResult",
    "lwa_deadline",
    "lwa_jobs",
    "simulate",
    "slot_grid",
]

ZONE_TIMEZONES = {
    "GB": "Europe/London",
    "DE-LU": "Europe/Berlin",
    "US-CAL-CISO": "America/Los_Angeles",
    "US-TEX-ERCO": "America/Chicago",
    "CA-ON": "America/Toronto",
    "AU-NSW": "Australia/Sydney",
    "AU-VIC": "Australia/Melbourne",
    "US-MIDA-PJM": "America/New_York",
    "US-NY-NYIS": "America/New_York",
    "BR-SP": "America/Sao_Paulo",
    "CL-SIC": "America/Santiago",
    "ZA": "Africa/Johannesburg",
    "SG": "Asia/Singapore",
    "KR": "Asia/Seoul",
    "IN-WE": "Asia/Kolkata",
    "JP-TK": "Asia/Tokyo",
}
"""Local time of each Electricity Maps zone in the shared data: workdays are local."""


@dataclass(frozen=True)
class LwaScenario:
    n_jobs: int = 3387
    min_duration_min: int = 4 * 60
    max_duration_min: int = 90 * 60  # exclusive, as range() in LWA
    step_min: int = 30
    workday_start_min: int = 9 * 60
    workday_end_min: int = 17 * 60  # exclusive
    seed: int = 0


def lwa_deadline(finish: pd.Timestamp) -> pd.Timestamp:
    """Next workday 09:00 after a local finish time; a finish inside a workday is its own."""
    # on the wall clock: a day is not 24 hours across a daylight-saving change, 09:00 is
    tz = finish.tz
    wall = finish.tz_localize(None) if tz is not None else finish
    nine = wall.normalize() + pd.Timedelta(hours=9)
    hour = finish.hour + finish.minute / 60
    if finish.weekday() >= 5 or hour > 17:
        nine += pd.Timedelta(days=1)
        while nine.weekday() >= 5:
            nine += pd.Timedelta(days=1)
    elif hour >= 9:
        return finish
    return nine.tz_localize(tz) if tz is not None else nine


def lwa_jobs(year: int, timezone: str, scenario: LwaScenario = LwaScenario()) -> pd.DataFrame:
    """Arrival, duration and deadline (UTC) of every job of ``year`` in local ``timezone``."""
    rng = np.random.default_rng(scenario.seed)
    days = pd.date_range(f"{year}-01-01", f"{year}-12-31", freq="D")
    workdays = days[days.weekday <= 4]
    per_day = rng.multinomial(scenario.n_jobs, [1 / len(workdays)] * len(workdays))
    starts = np.arange(scenario.workday_start_min, scenario.workday_end_min, scenario.step_min)
    arrivals = []
    for day, count in zip(workdays, per_day, strict=True):
        for minute in np.sort(rng.choice(starts, size=count)):
            arrivals.append(day + pd.Timedelta(minutes=int(minute)))
    durations = rng.choice(
        np.arange(scenario.min_duration_min, scenario.max_duration_min, scenario.step_min),
        size=scenario.n_jobs,
    )
    local = pd.DatetimeIndex(arrivals).tz_localize(timezone)
    duration = pd.to_timedelta(durations, unit="min")
    deadlines = [lwa_deadline(a + d) for a, d in zip(local, duration, strict=True)]
    return pd.DataFrame(
        {
            "arrival": local.tz_convert("UTC"),
            "duration_min": durations,
            "deadline": pd.DatetimeIndex(deadlines).tz_convert("UTC"),
        }
    )


def slot_grid(
    series: pd.Series, start: pd.Timestamp, end: pd.Timestamp, slot_s: float
) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Slot start times in [start, end) and the trace value holding at each (NaN: no data)."""
    times = pd.date_range(start, end, freq=pd.Timedelta(seconds=slot_s), inclusive="left")
    index = pd.DatetimeIndex(series.index)
    step = pd.Series(index[1:] - index[:-1]).mode().iloc[0] if len(index) > 1 else pd.Timedelta(0)
    values = series.reindex(times, method="ffill", tolerance=step - pd.Timedelta(1, "ns"))
    return times, values.to_numpy(dtype=float)


@dataclass
class SimResult:
    """Per policy: emissions relative to run-now, and what happened to the jobs."""

    emissions: dict[str, float] = field(default_factory=dict)
    """Sum over jobs of the actual intensity of the slots used (g/kWh x slots; x kWh/slot = g)."""
    infeasible: dict[str, int] = field(default_factory=dict)
    by_site: dict[str, dict[str, int]] = field(default_factory=dict)
    forecast_error: dict[str, Any] = field(default_factory=dict)
    jobs: int = 0
    dropped_no_data: int = 0

    def saving_pct(self, policy: str, baseline: str = "run-now") -> float:
        return 100.0 * (1.0 - self.emissions[policy] / self.emissions[baseline])


def requests_from_jobs(
    jobs: pd.DataFrame,
    times: pd.DatetimeIndex,
    sites: tuple[str, ...],
    interruptible: bool,
    min_chunk: int = 1,
    restart_slots: int = 0,
) -> list[Request]:
    """The jobs on the slot grid. With ``restart_slots`` every launch costs that many slots and
    each deadline moves as much later, so that running at once stays on time."""
    slot = times[1] - times[0]
    first = ((jobs.arrival - times[0]) / slot).to_numpy()
    deadline = ((jobs.deadline - times[0]) / slot).to_numpy()
    slots = (pd.to_timedelta(jobs.duration_min, unit="min") / slot).to_numpy()
    return [
        Request(
            f"job{i}",
            int(np.ceil(f)),
            int(np.floor(d)) + restart_slots,
            int(np.ceil(s)),
            interruptible,
            min_chunk,
            sites,
            restart_slots=restart_slots,
        )
        for i, (f, d, s) in enumerate(zip(first, deadline, slots, strict=True))
    ]


def simulate(
    requests: Sequence[Request],
    actual: dict[str, np.ndarray],
    times: pd.DatetimeIndex,
    forecasters: dict[str, Forecaster],
    policies: Sequence[str],
    capacity: dict[str, int] | None = None,
) -> SimResult:
    """Plan every request with each policy on the forecasts; score on the actual trace."""
    usable = [
        r
        for r in requests
        if r.first >= 0
        and r.deadline <= len(times)
        and all(np.isfinite(actual[s][r.first : r.deadline]).all() for s in r.sites)
    ]
    result = SimResult(jobs=len(usable), dropped_no_data=len(requests) - len(usable))
    if not usable:
        raise ScheduleError("no job of the scenario lies inside the traces; check years and zones")
    forecasts = _forecasts(usable, actual, times, forecasters, result)
    for name in policies:
        policy = POLICIES.get(name)
        scratch = {s: np.full(len(times), np.nan) for s in actual}
        free = {s: np.full(len(times), capacity[s]) for s in actual} if capacity else None
        views = {s: SiteView(scratch[s], free[s] if free else None) for s in actual}
        total, missed, sites_used = 0.0, 0, dict.fromkeys(actual, 0)
        for k in sorted(range(len(usable)), key=lambda i: (usable[i].first, usable[i].deadline)):
            req = usable[k]
            for s in req.sites:
                scratch[s][req.first : req.deadline] = forecasts[(k, s)]
            outcome = policy(req, views)
            if not isinstance(outcome, Choice):
                missed += 1
                continue
            if free is not None:
                for a, b in outcome.runs:
                    free[outcome.site][a:b] -= req.units
            total += float(actual[outcome.site][outcome.slot_indices].sum())
            sites_used[outcome.site] += 1
        result.emissions[name], result.infeasible[name] = total, missed
        result.by_site[name] = sites_used
    return result


def _forecasts(
    requests: Sequence[Request],
    actual: dict[str, np.ndarray],
    times: pd.DatetimeIndex,
    forecasters: dict[str, Forecaster],
    result: SimResult,
) -> dict[tuple[int, str], np.ndarray]:
    out = {}
    for site in {s for r in requests for s in r.sites}:
        f = forecasters[site]
        ks = [k for k, r in enumerate(requests) if site in r.sites]
        issues = np.array([requests[k].first for k in ks])
        horizons = np.array([requests[k].deadline - requests[k].first for k in ks])
        many = getattr(f, "predict_many", None)
        if many is not None:
            predicted = many(actual[site], times, issues, horizons)
        else:
            predicted = [
                f.predict(actual[site], times, i, h) for i, h in zip(issues, horizons, strict=True)
            ]
        seen, truth = [], []
        for k, fc in zip(ks, predicted, strict=True):
            out[(k, site)] = fc
            seen.append(fc)
            truth.append(actual[site][requests[k].first : requests[k].deadline])
        result.forecast_error[site] = forecast_error(
            np.concatenate(truth), np.concatenate(seen)
        ).to_dict() | {"forecaster": f.name}
    return out


def year_window(year: int, extra_days: int = 12) -> tuple[pd.Timestamp, pd.Timestamp]:
    """UTC span of a simulated year, long enough for the last jobs' deadlines."""
    start = pd.Timestamp(dt.datetime(year, 1, 1, tzinfo=dt.UTC)) - pd.Timedelta(days=2)
    return start, pd.Timestamp(dt.datetime(year + 1, 1, 1, tzinfo=dt.UTC)) + pd.Timedelta(
        days=extra_days
    )
