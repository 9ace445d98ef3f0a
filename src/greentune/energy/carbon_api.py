"""Live carbon-intensity APIs: Electricity Maps (v3) and the GB Carbon Intensity API.

Neither is needed by the tests: the network call is a ``Fetch`` (url, headers -> parsed JSON)
that tests replace. Responses become an ``IntensityTrace``, so coverage checks and messages are
the trace's. Each window is widened to whole hours and the answer cached, because the meter asks
for overlapping windows at every edge and the APIs are rate-limited.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pandas as pd

from greentune.energy.base import Segment
from greentune.energy.intensity import (
    CARBON_PROVIDERS,
    SPEC_ARGUMENTS,
    Basis,
    IntensityTrace,
    check_window,
    fmt_time,
    holes,
)
from greentune.errors import ConfigError, EnergyError

__all__ = ["ElectricityMapsApi", "Fetch", "UkCarbonIntensityApi", "urllib_fetch"]

Fetch = Callable[[str, dict[str, str]], Any]
"""(url, headers) -> the parsed JSON body; raises EnergyError when the call fails."""
Clock = Callable[[], dt.datetime]

TIMEOUT_S = 10.0
_HOUR = dt.timedelta(hours=1)
_CACHE_SIZE = 256
_RETRY = dt.timedelta(minutes=5)


def urllib_fetch(url: str, headers: dict[str, str]) -> Any:
    """GET ``url`` with the standard library; every failure becomes an EnergyError."""
    request = urllib.request.Request(url, headers={"User-Agent": "greentune", **headers})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").strip()
        raise EnergyError(f"{url} answered HTTP {exc.code} {exc.reason}: {detail}") from exc
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
        raise EnergyError(f"cannot fetch {url}: {exc}") from exc


def _floor_hour(when: dt.datetime) -> dt.datetime:
    return when.replace(minute=0, second=0, microsecond=0)


def _ceil_hour(when: dt.datetime) -> dt.datetime:
    floor = _floor_hour(when)
    return floor if floor == when else floor + _HOUR


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _LiveApi:
    """Shared part: hour-rounded, cached, chunked requests turned into an IntensityTrace."""

    name = "live"
    label = "live API"
    resolution = pd.Timedelta(hours=1)
    max_span = dt.timedelta(days=10)

    def __init__(self, fetch: Fetch | None, clock: Clock) -> None:
        self._fetch = fetch or urllib_fetch
        self._clock = clock
        self._cache: dict[tuple[dt.datetime, dt.datetime], tuple[IntensityTrace, dt.datetime]] = {}
        """(first hour, end hour) -> (trace, when fetched if it lacked data, else far future)."""

    def _points(self, lo: dt.datetime, hi: dt.datetime) -> dict[dt.datetime, float]:
        """Intensity per UTC timestamp for [lo, hi), at most ``max_span`` long."""
        raise NotImplementedError

    def covered_segments(self, start: dt.datetime, end: dt.datetime) -> list[Segment]:
        s, e = check_window(start, end)
        return self.trace(s, e).covered_segments(s, e) if e > s else []

    def segments(self, start: dt.datetime, end: dt.datetime) -> list[Segment]:
        s, e = check_window(start, end)
        return self.trace(s, e).segments(s, e) if e > s else []

    def trace(self, start: dt.datetime, end: dt.datetime) -> IntensityTrace:
        """The data for [start, end) widened to whole hours, fetched once per range."""
        s, e = check_window(start, end)
        now = self._clock()
        for (lo, hi), (cached, fresh_until) in self._cache.items():
            if lo <= s and e <= hi and now < fresh_until:
                return cached
        lo, hi = _floor_hour(s), _ceil_hour(e)
        points: dict[dt.datetime, float] = {}
        cursor = lo
        while cursor < hi:
            chunk_end = min(cursor + self.max_span, hi)
            points.update(self._points(cursor, chunk_end))
            cursor = chunk_end
        if not points:
            raise EnergyError(f"{self.label} returned no data for {fmt_time(lo)} .. {fmt_time(hi)}")
        trace = IntensityTrace(pd.Series(points).sort_index(), self.label, self.resolution)
        # Recent hours may not be published yet: ask again after a while, not at every edge.
        complete = not holes(trace.covered_segments(lo, hi), lo, hi)
        fresh_until = dt.datetime.max.replace(tzinfo=dt.UTC) if complete else now + _RETRY
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[(lo, hi)] = (trace, fresh_until)
        return trace


def _parse_utc(text: Any, what: str) -> dt.datetime:
    try:
        when = pd.Timestamp(str(text))
    except ValueError as exc:
        raise EnergyError(f"{what}: cannot parse time {text!r}") from exc
    if when.tzinfo is None:
        when = when.tz_localize("UTC")
    return when.tz_convert("UTC").to_pydatetime()


class ElectricityMapsApi(_LiveApi):
    """Hourly intensity of one zone from the Electricity Maps API v3."""

    name = "electricitymaps"
    base_url = "https://api.electricitymaps.com/v3/carbon-intensity"

    def __init__(
        self,
        zone: str,
        token: str | None = None,
        fetch: Fetch | None = None,
        basis: Basis = "lca",
        clock: Clock = _utc_now,
    ) -> None:
        super().__init__(fetch, clock)
        if not zone:
            raise ConfigError("electricitymaps needs a zone, e.g. electricitymaps:DE")
        if basis not in ("lca", "direct"):
            raise ConfigError(f"electricitymaps basis must be 'lca' or 'direct', got {basis!r}")
        token = token or os.environ.get("ELECTRICITYMAPS_TOKEN")
        if not token:
            raise EnergyError(
                "the Electricity Maps API needs a token: set the environment variable "
                "ELECTRICITYMAPS_TOKEN=<token> (get one at https://portal.electricitymaps.com) "
                "or pass token=..."
            )
        self.zone, self.basis, self._token = zone, basis, token
        self.label = f"Electricity Maps API (zone {zone})"

    def describe(self) -> str:
        return (
            f"electricitymaps {self.zone}: hourly {self.basis.upper()} carbon intensity "
            "from the Electricity Maps API v3"
        )

    def url(self, lo: dt.datetime, hi: dt.datetime) -> str:
        """history serves the last 24 h on every plan; past-range serves older ranges."""
        query = {"zone": self.zone}
        if lo >= self._clock() - dt.timedelta(hours=24):
            endpoint = "history"
        else:
            endpoint = "past-range"
            query |= {
                "start": lo.strftime("%Y-%m-%dT%H:%MZ"),
                "end": hi.strftime("%Y-%m-%dT%H:%MZ"),
            }
        if self.basis == "direct":
            query["emissionFactorType"] = "direct"
        return f"{self.base_url}/{endpoint}?{urllib.parse.urlencode(query)}"

    def _points(self, lo: dt.datetime, hi: dt.datetime) -> dict[dt.datetime, float]:
        url = self.url(lo, hi)
        payload = self._fetch(url, {"auth-token": self._token})
        rows = payload.get("data", payload.get("history")) if isinstance(payload, dict) else None
        if not isinstance(rows, list):
            raise EnergyError(f"{url}: unexpected answer (no 'data' or 'history' list)")
        points = {}
        for row in rows:
            when = _parse_utc(row.get("datetime"), url)
            value = row.get("carbonIntensity")
            if value is not None and lo <= when < hi:
                points[when] = float(value)
        return points


class UkCarbonIntensityApi(_LiveApi):
    """Half-hourly intensity of Great Britain from api.carbonintensity.org.uk (no token)."""

    name = "uk"
    base_url = "https://api.carbonintensity.org.uk/intensity"
    resolution = pd.Timedelta(minutes=30)
    max_span = dt.timedelta(days=14)

    label = "GB Carbon Intensity API"

    def __init__(self, fetch: Fetch | None = None, clock: Clock = _utc_now) -> None:
        super().__init__(fetch, clock)

    def describe(self) -> str:
        return (
            "uk: half-hourly GB carbon intensity from National Grid ESO's Carbon Intensity API "
            "(actual, else forecast)"
        )

    def url(self, lo: dt.datetime, hi: dt.datetime) -> str:
        return f"{self.base_url}/{lo:%Y-%m-%dT%H:%MZ}/{hi:%Y-%m-%dT%H:%MZ}"

    def _points(self, lo: dt.datetime, hi: dt.datetime) -> dict[dt.datetime, float]:
        url = self.url(lo, hi)
        payload = self._fetch(url, {"Accept": "application/json"})
        rows = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(rows, list):
            raise EnergyError(f"{url}: unexpected answer (no 'data' list)")
        points = {}
        for row in rows:
            when = _parse_utc(row.get("from"), url)
            intensity = row.get("intensity") or {}
            value = intensity.get("actual")
            if value is None:
                value = intensity.get("forecast")
            if value is not None and lo <= when < hi:
                points[when] = float(value)
        return points


CARBON_PROVIDERS.add("electricitymaps", ElectricityMapsApi)
CARBON_PROVIDERS.add("uk", UkCarbonIntensityApi)
SPEC_ARGUMENTS.add("electricitymaps", lambda arg: {"zone": arg})
