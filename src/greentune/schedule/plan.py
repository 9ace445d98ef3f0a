"""From a job file to a plan: forecasts per site, a policy's choices, emissions against run-now.

plan.json (schema_version 1):
    created, job_file, now, grid_start, slot_s, policy, forecast
    sites     {name: {carbon, capacity, forecast_g_per_kwh [per slot], actual_g_per_kwh [per slot
              or null where the source does not cover the window], forecast_error}}
    jobs      [{name, status (planned|infeasible), reason, site, chunks [{start, end}] (UTC ISO),
              energy_wh, duration_s, estimate, interruptible, deadline, restart_s (each
              chunk's start, work-free: chunks include it), expected_g, run_now_g, actual_g,
              run_now_actual_g}]
    totals    {expected_g, run_now_g, saving_pct, actual_g, run_now_actual_g, actual_saving_pct}

``expected`` prices a schedule with the forecast; ``actual`` with the source's own values where it
covers the window (replays of a trace), else null.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from greentune.energy.base import J_PER_KWH
from greentune.energy.carbon import parse_provider_spec
from greentune.errors import EnergyError, ScheduleError
from greentune.schedule.forecast import forecast_error, make_forecaster
from greentune.schedule.jobs import Job, JobFile
from greentune.schedule.policies import POLICIES, Choice, Request, SiteView, place

__all__ = ["SCHEMA_VERSION", "make_plan", "slot_means"]

SCHEMA_VERSION = 1


def slot_means(provider: Any, start: dt.datetime, n: int, slot_s: float) -> np.ndarray:
    """Time-weighted mean intensity per slot; NaN where the provider has no data."""
    end = start + dt.timedelta(seconds=slot_s * n)
    covered = getattr(provider, "covered_segments", None)
    try:
        segments = covered(start, end) if covered else provider.segments(start, end)
    except EnergyError:
        segments = []
    total = np.zeros(n)
    seconds = np.zeros(n)
    for seg in segments:
        lo = (seg.start - start).total_seconds()
        hi = (seg.end - start).total_seconds()
        k = int(lo // slot_s)
        while k < n and k * slot_s < hi:
            overlap = min(hi, (k + 1) * slot_s) - max(lo, k * slot_s)
            total[k] += overlap * seg.intensity_g_per_kwh
            seconds[k] += overlap
            k += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        means = total / seconds
    means[seconds < slot_s * 0.999] = np.nan
    return means


@dataclass
class _Site:
    forecast: np.ndarray
    actual: np.ndarray
    error: dict[str, Any] | None


def _site_forecast(name: str, spec: str, jf: JobFile, start: dt.datetime, n: int) -> _Site:
    st = jf.settings
    provider = parse_provider_spec(spec)
    hist_n = math.ceil(st.history_s / st.slot_s)
    hist_start = start - dt.timedelta(seconds=hist_n * st.slot_s)
    history = slot_means(provider, hist_start, hist_n, st.slot_s)
    actual = slot_means(provider, start, n, st.slot_s)
    forecaster = make_forecaster(st.forecast)
    times = pd.date_range(hist_start, periods=hist_n + n, freq=pd.Timedelta(seconds=st.slot_s))
    spd = int(86400 // st.slot_s)
    where = f"{jf.path}: site {name!r} ({spec})"
    if forecaster.uses_future:
        if not np.isfinite(actual).all():
            gap = times[hist_n + int(np.argmin(np.isfinite(actual)))]
            raise ScheduleError(
                f"{where}: the {forecaster.name} forecast replays the source, which has no data "
                f"for {gap:%Y-%m-%d %H:%M} UTC inside the planning window "
                f"{start:%Y-%m-%d %H:%M} .. {times[-1] + times.freq:%Y-%m-%d %H:%M}; use a trace "
                "that covers it or schedule.forecast: seasonal-naive"
            )
        values = np.concatenate([history, actual])
    else:
        missing = int((~np.isfinite(history)).sum())
        if missing > hist_n // 10:
            raise ScheduleError(
                f"{where}: the source covers only {hist_n - missing} of the {hist_n} slots of "
                f"history before {start:%Y-%m-%d %H:%M} UTC that schedule.forecast="
                f"{st.forecast} learns from; use a trace that spans "
                f"{hist_start:%Y-%m-%d %H:%M} .. {start:%Y-%m-%d %H:%M} or shorten "
                "schedule.history"
            )
        history = pd.Series(history).interpolate(limit_direction="both").to_numpy()
        values = np.concatenate([history, np.full(n, np.nan)])
    forecaster.fit(values[:hist_n], times[:hist_n], spd)
    forecast = forecaster.predict(values, times, hist_n, n)
    covered = np.isfinite(actual)
    error = forecast_error(actual[covered], forecast[covered]).to_dict() if covered.any() else None
    return _Site(np.asarray(forecast, float), actual, error)


def _request(job: Job, start: dt.datetime, slot_s: float) -> Request:
    def slots(when: dt.datetime) -> float:
        return (when - start).total_seconds() / slot_s

    return Request(
        name=job.name,
        first=max(0, math.ceil(slots(job.earliest_start) - 1e-9)),
        deadline=math.floor(slots(job.deadline) + 1e-9),
        slots=math.ceil(job.estimate.duration_s / slot_s - 1e-9),
        interruptible=job.interruptible,
        min_chunk=max(1, math.ceil(job.min_chunk_s / slot_s - 1e-9)),
        sites=job.sites,
        units=job.units,
        restart_slots=math.ceil(job.restart_s / slot_s - 1e-9),
    )


def _weights(
    choice: Choice, duration_s: float, slot_s: float, restart_s: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(slot indices that do work, seconds of work in each). Every run spends its first
    ``restart_s`` starting (the ledger does not see a process start), then works until its end
    or until the work is done. The restart is priced to the second: the policy reserves whole
    slots for it, but a 7-minute start-up in a 30-minute slot leaves 23 minutes of work there,
    and pricing that slot as idle misplaces the energy by most of a slot."""
    slots: list[int] = []
    seconds: list[float] = []
    left = duration_s
    for a, b in choice.runs:
        t, run_end = a * slot_s + restart_s, b * slot_s
        while left > 1e-9 and t < run_end - 1e-9:
            k = math.floor(t / slot_s + 1e-9)
            work = min((k + 1) * slot_s, run_end) - t
            work = min(work, left)
            slots.append(k)
            seconds.append(work)
            left -= work
            t += work
    if left > 1e-9:  # the policy sized the runs with whole restart slots: this cannot happen
        seconds[-1] += left
    return np.asarray(slots, dtype=int), np.asarray(seconds)


def _grams(
    values: np.ndarray, idx: np.ndarray, seconds: np.ndarray, power_w: float
) -> float | None:
    if len(idx) and idx.max() >= len(values):  # work past the plan's last slot: not priced
        return None
    picked = values[idx]
    if not np.isfinite(picked).all():
        return None
    return float((picked * seconds).sum() * power_w / J_PER_KWH)


def _chunks(
    choice: Choice, start: dt.datetime, duration_s: float, slot_s: float, restart_s: float = 0.0
) -> list[dict[str, str]]:
    """Each run from its start to the end of its work (its restart included). Priced to the
    second, the runs the policy sized with whole restart slots hold more work than it planned,
    so the work may end in an earlier run: the runs after it are dropped, and the run that
    ends the work is the last chunk, which the executor never cuts short."""
    out, left = [], duration_s
    for a, b in choice.runs:
        if left <= 1e-9:
            break
        work = max(0.0, min((b - a) * slot_s - restart_s, left))
        left -= work
        lo = start + dt.timedelta(seconds=a * slot_s)
        end = lo + dt.timedelta(seconds=restart_s + work)
        out.append({"start": lo.isoformat(), "end": end.isoformat()})
    return out


def make_plan(jf: JobFile, policy: str | None = None) -> dict[str, Any]:
    """The plan of ``jf`` under ``policy`` (default: the file's), as plan.json's dict."""
    st = jf.settings
    name = policy or st.policy
    chosen_policy = POLICIES.get(name)
    slot = dt.timedelta(seconds=st.slot_s)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    start = epoch + ((st.now - epoch) // slot) * slot
    end = max(j.deadline for j in jf.jobs)
    n = max(1, math.ceil((end - start) / slot))  # every deadline passed: each job says so
    sites = {s: _site_forecast(s, jf.sites[s].carbon, jf, start, n) for s in jf.sites}
    requests = [_request(j, start, st.slot_s) for j in jf.jobs]

    def views() -> dict[str, SiteView]:
        return {s: SiteView(sites[s].forecast, np.full(n, jf.sites[s].capacity)) for s in jf.sites}

    outcomes = place(requests, chosen_policy, views())
    baseline = place(requests, POLICIES.get("run-now"), views())
    jobs = [
        _job_row(job, out, base, sites, start, st.slot_s)
        for job, out, base in zip(jf.jobs, outcomes, baseline, strict=True)
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "job_file": str(jf.path),
        "now": st.now.isoformat(),
        "grid_start": start.isoformat(),
        "slot_s": st.slot_s,
        "policy": name,
        "forecast": st.forecast,
        "sites": {
            s: {
                "carbon": jf.sites[s].carbon,
                "capacity": jf.sites[s].capacity,
                "forecast_g_per_kwh": sites[s].forecast.tolist(),
                "actual_g_per_kwh": [
                    None if not np.isfinite(v) else float(v) for v in sites[s].actual
                ],
                "forecast_error": sites[s].error,
            }
            for s in jf.sites
        },
        "jobs": jobs,
        "totals": _totals(jobs),
    }


def _job_row(
    job: Job, out: Any, base: Any, sites: dict[str, _Site], start: dt.datetime, slot_s: float
) -> dict[str, Any]:
    est = job.estimate
    row: dict[str, Any] = {
        "name": job.name,
        "energy_wh": est.energy_j / 3600.0,
        "duration_s": est.duration_s,
        "estimate": est.source,
        "interruptible": job.interruptible,
        "earliest_start": job.earliest_start.isoformat(),
        "deadline": job.deadline.isoformat(),
        "units": job.units,
        "restart_s": job.restart_s,
    }
    for key, outcome in (("", out), ("run_now_", base)):
        if isinstance(outcome, Choice):
            idx, secs = _weights(outcome, est.duration_s, slot_s, job.restart_s)
            site = sites[outcome.site]
            row[f"{key}expected_g"] = _grams(site.forecast, idx, secs, est.power_w)
            row[f"{key}actual_g"] = _grams(site.actual, idx, secs, est.power_w)
        else:
            row[f"{key}expected_g"] = row[f"{key}actual_g"] = None
    row["run_now_g"] = row.pop("run_now_expected_g")
    if isinstance(out, Choice):
        row |= {
            "status": "planned",
            "reason": None,
            "site": out.site,
            "chunks": _chunks(out, start, est.duration_s, slot_s, job.restart_s),
        }
    else:
        row |= {"status": "infeasible", "reason": out.reason, "site": None, "chunks": []}
    return row


def _totals(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    planned = [j for j in jobs if j["status"] == "planned" and j["run_now_g"] is not None]

    def total(key: str) -> float | None:
        values = [j[key] for j in planned]
        return None if not values or any(v is None for v in values) else float(sum(values))

    out: dict[str, Any] = {
        k: total(k) for k in ("expected_g", "run_now_g", "actual_g", "run_now_actual_g")
    }
    out["saving_pct"] = _pct(out["expected_g"], out["run_now_g"])
    out["actual_saving_pct"] = _pct(out["actual_g"], out["run_now_actual_g"])
    out["infeasible"] = [j["name"] for j in jobs if j["status"] == "infeasible"]
    return out


def _pct(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return 100.0 * (1.0 - value / baseline)
