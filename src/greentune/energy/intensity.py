"""Times, the in-memory intensity trace, and the provider registries (a leaf of energy/).

The trace-file and live-API providers (``carbon_trace``, ``carbon_api``) build on what is here;
``carbon`` adds the fixed, static and fallback providers and the spec grammar, and imports those
modules so that every built-in provider is registered once ``greentune.energy.carbon`` is.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pandas as pd

from greentune.energy.base import IntensityProvider, Segment
from greentune.errors import EnergyError
from greentune.registry import Registry

log = logging.getLogger("greentune.energy.carbon")

CARBON_PROVIDERS = Registry[Callable[..., IntensityProvider]]("carbon provider")
SPEC_ARGUMENTS = Registry[Callable[[str], dict[str, Any]]]("carbon provider spec argument")
"""Per provider: how the text after ``name:`` in a spec becomes ``make_provider`` options."""

Basis = Literal["lca", "direct"]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US = dt.timedelta(microseconds=1)


# --- times -------------------------------------------------------------------------------------


def require_utc(when: dt.datetime, what: str = "time") -> dt.datetime:
    """``when`` in UTC; naive datetimes are refused because their zone would be a guess."""
    if not isinstance(when, dt.datetime) or when.tzinfo is None or when.utcoffset() is None:
        raise EnergyError(
            f"{what} {when!r} has no timezone; pass an aware datetime, "
            "e.g. datetime.now(datetime.UTC)"
        )
    return when.astimezone(dt.UTC)


def check_window(start: dt.datetime, end: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """Both edges in UTC, end not before start."""
    s, e = require_utc(start, "window start"), require_utc(end, "window end")
    if e < s:
        raise EnergyError(f"window end {fmt_time(e)} is before its start {fmt_time(s)}")
    return s, e


def fmt_time(when: dt.datetime) -> str:
    if when.second == 0 and when.microsecond == 0:
        return when.strftime("%Y-%m-%d %H:%M UTC")
    return when.isoformat()


def fmt_step(step: pd.Timedelta) -> str:
    seconds = step.total_seconds()
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds % 60 == 0 else f"{seconds:g} s"


def _to_ns(when: dt.datetime) -> int:
    # Integer microseconds keep window edges exact; float seconds would not.
    return ((when - _EPOCH) // _US) * 1000


def _from_ns(ns: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=int(ns) // 1000)


def holes(
    segments: list[Segment], start: dt.datetime, end: dt.datetime
) -> list[tuple[dt.datetime, dt.datetime]]:
    """The stretches of [start, end) that ordered, non-overlapping ``segments`` leave out."""
    out, cursor = [], start
    for seg in segments:
        if seg.start > cursor:
            out.append((cursor, seg.start))
        cursor = max(cursor, seg.end)
    if cursor < end:
        out.append((cursor, end))
    return out


# --- the in-memory trace that files and live APIs share ---------------------------------------


class IntensityTrace:
    """Intensities at increasing UTC timestamps; each holds until the next, at most one step.

    ``label`` names the data (files, API and zone) in error messages. ``resolution`` is the
    modal step between timestamps unless given (live APIs know theirs; one point needs it).
    """

    def __init__(
        self, series: pd.Series, label: str, resolution: pd.Timedelta | None = None
    ) -> None:
        if len(series) == 0:
            raise EnergyError(f"carbon trace {label} is empty")
        index = pd.DatetimeIndex(series.index)
        if index.tz is None:
            raise EnergyError(f"carbon trace {label}: timestamps need a timezone")
        index = index.tz_convert("UTC").as_unit("ns")
        self.label = label
        self._ts = index.asi8
        self._values = series.to_numpy(dtype=float)
        steps = np.diff(self._ts)
        if np.any(steps <= 0):
            raise EnergyError(f"carbon trace {label}: timestamps must strictly increase")
        if resolution is None:
            if len(steps) == 0:
                raise EnergyError(
                    f"carbon trace {label} has a single timestamp; give at least two rows so "
                    "its time step is known"
                )
            values, counts = np.unique(steps, return_counts=True)
            resolution = pd.Timedelta(int(values[np.argmax(counts)]), unit="ns")
        self.resolution = pd.Timedelta(resolution)
        res_ns = self.resolution.value
        self._ends = self._ts + np.append(np.minimum(steps, res_ns), res_ns)
        self._series = pd.Series(self._values, index=index, name="intensity_g_per_kwh")
        self._series.index.name = "timestamp"

    @property
    def coverage(self) -> tuple[dt.datetime, dt.datetime]:
        return _from_ns(self._ts[0]), _from_ns(self._ends[-1])

    @property
    def gaps(self) -> list[tuple[dt.datetime, dt.datetime]]:
        where = np.flatnonzero(self._ends[:-1] < self._ts[1:])
        return [(_from_ns(self._ends[i]), _from_ns(self._ts[i + 1])) for i in where]

    def series(self) -> pd.Series:
        return self._series.copy()

    def covered_segments(self, start: dt.datetime, end: dt.datetime) -> list[Segment]:
        """The parts of [start, end) the trace covers, in order; uncovered parts left out."""
        s, e = check_window(start, end)
        s_ns, e_ns = _to_ns(s), _to_ns(e)
        first = max(int(np.searchsorted(self._ts, s_ns, side="right")) - 1, 0)
        stop = int(np.searchsorted(self._ts, e_ns, side="left"))
        out = []
        for k in range(first, stop):
            lo, hi = max(int(self._ts[k]), s_ns), min(int(self._ends[k]), e_ns)
            if hi > lo:
                seg_start = s if lo == s_ns else _from_ns(lo)
                seg_end = e if hi == e_ns else _from_ns(hi)
                out.append(Segment(seg_start, seg_end, float(self._values[k])))
        return out

    def segments(self, start: dt.datetime, end: dt.datetime) -> list[Segment]:
        s, e = check_window(start, end)
        out = self.covered_segments(s, e)
        missing = holes(out, s, e)
        if missing:
            raise self.uncovered_error(s, e, missing[0][0])
        return out

    def uncovered_error(self, s: dt.datetime, e: dt.datetime, at: dt.datetime) -> EnergyError:
        first, last = self.coverage
        where = f"it covers {fmt_time(first)} .. {fmt_time(last)}"
        if first <= at < last:
            k = int(np.searchsorted(self._ts, _to_ns(at), side="right")) - 1
            gap = f"{fmt_time(_from_ns(self._ends[k]))} .. {fmt_time(_from_ns(self._ts[k + 1]))}"
            where += f" but has a gap {gap}"
        return EnergyError(
            f"carbon trace {self.label} does not cover the window {fmt_time(s)} .. "
            f"{fmt_time(e)}: {where}; use a trace that spans the window or add a fallback "
            "(e.g. energy.carbon_fallback=static:WORLD)"
        )
