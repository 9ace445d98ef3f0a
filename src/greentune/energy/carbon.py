"""Grid carbon intensity: providers, a fallback wrapper and the emissions of one window.

Providers (registry ``CARBON_PROVIDERS``; build one with ``make_provider(name, **options)``):

- ``fixed``: one constant (tests, user overrides);
- ``static``: yearly country average from the table CodeCarbon ships;
- ``trace``: an hourly (or any regular) history in CSV files, generic or Electricity Maps export;
- ``electricitymaps``, ``uk``: live APIs (``energy.carbon_api``), with the network call injected.

Specs are the short form configs and the command line use (``parse_provider_spec``)::

    spec    := single ("|" single)*    later ones fill what the earlier ones do not cover
    single  := name [":" argument]
    fixed:250               250 g/kWh at all times
    static                  world average (same as static:WORLD)
    static:DE               country: ISO-3166 alpha-2 (DE, GB, AU) or alpha-3 (DEU), or WORLD
    trace:/path/file.csv    one CSV trace
    trace:/dir@GB           /dir/GB_*_hourly.csv, sorted and concatenated (zone after the last @)
    electricitymaps:DE      Electricity Maps API v3 (token in ELECTRICITYMAPS_TOKEN)
    uk                      National Grid ESO Carbon Intensity API (Great Britain)

All times are timezone-aware UTC inside; naive datetimes are refused with an EnergyError.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import json
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from greentune.energy.base import J_PER_KWH, IntensityProvider, Segment, codecarbon_data_path
from greentune.errors import ConfigError, EnergyError
from greentune.registry import Registry

__all__ = [
    "CARBON_PROVIDERS",
    "SPEC_ARGUMENTS",
    "FixedIntensity",
    "IntensityTrace",
    "StaticIntensity",
    "TraceIntensity",
    "WithFallback",
    "emissions_g",
    "make_provider",
    "parse_provider_spec",
    "with_fallback",
]

log = logging.getLogger(__name__)

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


# --- fixed and static ----------------------------------------------------------------------


class FixedIntensity:
    """One constant intensity at all times."""

    name = "fixed"

    def __init__(self, intensity_g_per_kwh: float) -> None:
        try:
            value = float(intensity_g_per_kwh)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ConfigError(
                f"fixed carbon intensity must be a number >= 0 g/kWh, got {intensity_g_per_kwh!r}"
            )
        self.intensity_g_per_kwh = value

    def describe(self) -> str:
        return f"fixed: {self.intensity_g_per_kwh:g} g/kWh (set by the user)"

    def segments(self, start: dt.datetime, end: dt.datetime) -> list[Segment]:
        s, e = check_window(start, end)
        return [Segment(s, e, self.intensity_g_per_kwh)] if e > s else []


@functools.cache
def _codecarbon_table(name: str) -> dict[str, Any]:
    path = codecarbon_data_path("private_infra", name)
    try:
        table: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EnergyError(f"cannot read CodeCarbon's {path}: {exc}; reinstall codecarbon") from exc
    return table


def _alpha3(region: str) -> str:
    """'DE', 'deu', 'UK' -> 'DEU', 'DEU', 'GBR'; 'WORLD' stays."""
    code = region.strip().upper()
    if code == "UK":  # not ISO-3166 but what people write
        code = "GB"
    if len(code) == 2:
        import pycountry  # imported here: 40 ms that fixed and trace users need not pay

        country = pycountry.countries.get(alpha_2=code)
        if country is not None:
            code = country.alpha_3
    return code


class StaticIntensity:
    """Yearly average intensity of one country (or the world) from CodeCarbon's tables."""

    name = "static"

    def __init__(self, region: str = "WORLD") -> None:
        code = _alpha3(region)
        mix = _codecarbon_table("global_energy_mix.json")
        self.region = code
        if code == "WORLD":
            world = _codecarbon_table("carbon_intensity_per_source.json")
            self.intensity_g_per_kwh = float(world["world_average"])
            self.year: int | None = None
            self.country_name = "World"
            self.source = f"world average from {world['world_average_source']}"
        elif code in mix:
            row = mix[code]
            self.intensity_g_per_kwh = float(row["carbon_intensity"])
            self.year = int(row["year"])
            self.country_name = str(row["country_name"])
            self.source = f"yearly average {self.year}, Ember/Our World in Data"
        else:
            raise ConfigError(
                f"unknown region {region!r} for static carbon intensity; use an ISO-3166 "
                "alpha-2 or alpha-3 country code or WORLD, e.g. DE, DEU, GB, US, FR, AU, IN "
                f"({len(mix)} countries in CodeCarbon's global_energy_mix.json)"
            )

    def describe(self) -> str:
        table = "global_energy_mix.json" if self.year else "carbon_intensity_per_source.json"
        return (
            f"static {self.region}: {self.intensity_g_per_kwh:.2f} g/kWh "
            f"({self.source} via CodeCarbon's {table})"
        )

    def segments(self, start: dt.datetime, end: dt.datetime) -> list[Segment]:
        s, e = check_window(start, end)
        return [Segment(s, e, self.intensity_g_per_kwh)] if e > s else []


# --- trace files -----------------------------------------------------------------------------

_GENERIC = ("timestamp", "intensity")
_EM_TIME = "Datetime (UTC)"
_EM_COLUMNS = {
    "direct": "Carbon Intensity gCO₂eq/kWh (direct)",
    "lca": "Carbon Intensity gCO₂eq/kWh (LCA)",
}
_EM_ZONE = "Zone Id"
_AWARE = re.compile(r"(?:Z|[+-]\d\d:?\d\d)$")


def _trace_files(path: str | Path | list[str | Path], zone: str | None) -> list[Path]:
    if isinstance(path, list | tuple):
        files = [Path(p) for p in path]
    elif Path(path).is_dir():
        folder = Path(path)
        zones = sorted({p.name.rsplit("_", 2)[0] for p in folder.glob("*_*_hourly.csv")})
        if not zone:
            raise ConfigError(
                f"carbon trace {folder} is a directory: say which zone to read "
                f"(zone=..., or trace:{folder}@ZONE); zones there: {', '.join(zones) or 'none'}"
            )
        files = sorted(folder.glob(f"{zone}_*_hourly.csv"))
        if not files:
            raise EnergyError(
                f"no {zone}_*_hourly.csv files in {folder}; zones there: "
                f"{', '.join(zones) or 'none'}"
            )
    else:
        files = [Path(path)]
    if not files:
        raise ConfigError("carbon trace: the list of files is empty")
    for file in files:
        if not file.is_file():
            raise EnergyError(f"carbon trace file {file} does not exist (or is not a file)")
    return files


def _read_csv(file: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(file, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise EnergyError(f"cannot read carbon trace file {file}: {exc}") from exc


def _detect_columns(
    file: Path, frame: pd.DataFrame, basis: Basis, zone: str | None
) -> tuple[str, str, bool]:
    """(time column, intensity column, timestamps are UTC by the format's definition)."""
    columns = [str(c).strip() for c in frame.columns]
    frame.columns = pd.Index(columns)
    if _EM_TIME in columns or _EM_ZONE in columns:
        wanted = [_EM_TIME, _EM_COLUMNS["direct"], _EM_COLUMNS["lca"], _EM_ZONE]
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise EnergyError(
                f"carbon trace file {file} looks like an Electricity Maps export but lacks "
                f"{missing}; that format needs the columns {wanted}"
            )
        zones = set(frame[_EM_ZONE].str.strip())
        if zone and zones - {zone}:
            raise EnergyError(
                f"carbon trace file {file} holds zone(s) {sorted(zones)}, not {zone!r}"
            )
        return _EM_TIME, _EM_COLUMNS[basis], True
    if all(c in columns for c in _GENERIC):
        return "timestamp", "intensity", False
    raise EnergyError(
        f"carbon trace file {file} has columns {columns}; expected either the generic format "
        f"{list(_GENERIC)} (intensity in g/kWh) or the Electricity Maps export "
        f"[{_EM_TIME!r}, {_EM_COLUMNS['direct']!r}, {_EM_COLUMNS['lca']!r}, {_EM_ZONE!r}]"
    )


def _parse_times(file: Path, raw: pd.Series, naive_tz: str) -> pd.DatetimeIndex:
    text = raw.str.strip()
    has_offset = text.str.contains(_AWARE).to_numpy(dtype=bool)
    aware = bool(has_offset[0])
    mixed = np.flatnonzero(has_offset != aware)
    if len(mixed):
        raise EnergyError(
            f"carbon trace file {file} line {int(mixed[0]) + 2}: timestamp "
            f"{raw.iloc[int(mixed[0])]!r} {'lacks' if aware else 'has'} a UTC offset unlike "
            "line 2; give every timestamp an offset, or none (then timezone= applies)"
        )
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=aware)
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        row = int(bad[0])
        raise EnergyError(
            f"carbon trace file {file} line {row + 2}: cannot parse timestamp {raw.iloc[row]!r} "
            "(use ISO 8601, e.g. 2024-01-31 13:00 or 2024-01-31T13:00Z)"
        )
    index = pd.DatetimeIndex(parsed)
    if aware:
        return index.tz_convert("UTC")
    try:
        # 'infer' resolves the repeated local hour when clocks go back, from the row order.
        return index.tz_localize(naive_tz, ambiguous="infer").tz_convert("UTC")
    except Exception as exc:  # pandas raises pytz or its own errors depending on version
        raise EnergyError(
            f"carbon trace file {file}: local times in {naive_tz} cannot be placed in UTC "
            f"({exc}); write the timestamps in UTC or with an offset"
        ) from exc


def _parse_values(file: Path, raw: pd.Series, column: str) -> np.ndarray:
    values = pd.to_numeric(raw.str.strip(), errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        row = int(bad[0])
        raise EnergyError(
            f"carbon trace file {file} line {row + 2}: {column} {raw.iloc[row]!r} is not a number"
        )
    negative = np.flatnonzero(values < 0)
    if len(negative):
        row = int(negative[0])
        raise EnergyError(
            f"carbon trace file {file} line {row + 2}: negative {column} {values[row]:g}"
        )
    return values


def _read_trace_file(
    file: Path, basis: Basis, timezone: str, zone: str | None
) -> tuple[pd.DatetimeIndex, np.ndarray, str]:
    frame = _read_csv(file)
    time_col, value_col, utc = _detect_columns(file, frame, basis, zone)
    if frame.empty:
        raise EnergyError(f"carbon trace file {file} has no rows")
    times = _parse_times(file, frame[time_col], "UTC" if utc else timezone)
    values = _parse_values(file, frame[value_col], value_col)
    kind = f"Electricity Maps export, {basis.upper()}" if utc else "timestamp,intensity"
    return times, values, kind


def _check_order(files: list[Path], ts: np.ndarray, origin: np.ndarray, line: np.ndarray) -> None:
    bad = np.flatnonzero(np.diff(ts) <= 0)
    if not len(bad):
        return
    k = int(bad[0])
    earlier = f"{files[origin[k]]} line {line[k]}"
    later = f"{files[origin[k + 1]]} line {line[k + 1]}"
    when = fmt_time(_from_ns(ts[k + 1]))
    if ts[k + 1] == ts[k]:
        raise EnergyError(f"carbon trace: duplicate timestamp {when} in {earlier} and {later}")
    raise EnergyError(
        f"carbon trace: timestamps out of order: {when} in {later} comes after "
        f"{fmt_time(_from_ns(ts[k]))} in {earlier}; rows and files (sorted by name) must be "
        "in time order"
    )


def _label(files: list[Path]) -> str:
    if len(files) == 1:
        return str(files[0])
    if len({f.parent for f in files}) > 1:
        return ", ".join(str(f) for f in files)
    return f"{files[0].parent}/{{{files[0].name} .. {files[-1].name}}} ({len(files)} files)"


class TraceIntensity:
    """Intensity history (g/kWh) from one CSV, a list of CSVs, or a directory and a zone.

    The format is read from each file's header:

    - generic: ``timestamp,intensity`` (other columns ignored); timestamps with an offset or
      ``Z`` are converted to UTC, naive ones are local times in ``timezone``;
    - Electricity Maps export: ``Datetime (UTC)`` (naive UTC), ``Carbon Intensity gCO₂eq/kWh
      (direct)`` and ``(LCA)`` (``basis`` picks one), ``Zone Id``; ``timezone`` is not used.

    Each value holds from its timestamp until the next one, at most one ``resolution`` (the
    modal step); coverage is [first timestamp, last timestamp + resolution) minus any gaps.
    """

    name = "trace"

    def __init__(
        self,
        path: str | Path | list[str | Path],
        zone: str | None = None,
        basis: Basis = "lca",
        timezone: str = "UTC",
    ) -> None:
        if basis not in _EM_COLUMNS:
            raise ConfigError(f"carbon trace basis must be 'lca' or 'direct', got {basis!r}")
        _check_timezone(timezone)
        self.files = _trace_files(path, zone)
        self.zone, self.basis, self.timezone = zone, basis, timezone
        parts = [_read_trace_file(f, basis, timezone, zone) for f in self.files]
        ts = np.concatenate([p[0].as_unit("ns").asi8 for p in parts])
        origin = np.concatenate([np.full(len(p[1]), i) for i, p in enumerate(parts)])
        line = np.concatenate([np.arange(2, len(p[1]) + 2) for p in parts])
        _check_order(self.files, ts, origin, line)
        index = pd.DatetimeIndex(pd.to_datetime(ts, unit="ns", utc=True))
        values = np.concatenate([p[1] for p in parts])
        self.formats = sorted({p[2] for p in parts})
        self.trace = IntensityTrace(pd.Series(values, index=index), _label(self.files))

    @property
    def resolution(self) -> pd.Timedelta:
        return self.trace.resolution

    @property
    def coverage(self) -> tuple[dt.datetime, dt.datetime]:
        return self.trace.coverage

    def series(self) -> pd.Series:
        """The history: UTC DatetimeIndex, float g/kWh."""
        return self.trace.series()

    def describe(self) -> str:
        first, last = self.coverage
        gaps = self.trace.gaps
        return (
            f"trace {self.trace.label} ({'; '.join(self.formats)}): "
            f"every {fmt_step(self.resolution)}, "
            f"{fmt_time(first)} .. {fmt_time(last)}" + (f", {len(gaps)} gap(s)" if gaps else "")
        )

    def covered_segments(self, start: dt.datetime, end: dt.datetime) -> list[Segment]:
        return self.trace.covered_segments(start, end)

    def segments(self, start: dt.datetime, end: dt.datetime) -> list[Segment]:
        return self.trace.segments(start, end)


def _check_timezone(name: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"unknown timezone {name!r} for the carbon trace; use an IANA name such as "
            "UTC, Europe/London or Australia/Melbourne"
        ) from exc


# --- fallback ----------------------------------------------------------------------------------


class PartialProvider(Protocol):
    """Providers that can say which parts of a window they cover without failing."""

    def covered_segments(self, start: dt.datetime, end: dt.datetime) -> list[Segment]: ...


def _covered_part(provider: IntensityProvider, s: dt.datetime, e: dt.datetime) -> list[Segment]:
    try:
        covered = getattr(provider, "covered_segments", None)
        return list(covered(s, e)) if covered else provider.segments(s, e)
    except EnergyError as exc:
        # A live API that is down must not stop the run when a fallback was configured.
        log.warning("carbon provider %s failed, using the fallback: %s", provider.name, exc)
        return []


class WithFallback:
    """``primary`` where it covers the window, ``fallback`` for the stretches it does not."""

    def __init__(self, primary: IntensityProvider, fallback: IntensityProvider) -> None:
        self.primary, self.fallback = primary, fallback
        self.name = f"{primary.name}+{fallback.name}"
        self.fallback_s = 0.0
        """Seconds priced by the fallback so far (the ledger can report the share)."""

    def describe(self) -> str:
        return f"{self.primary.describe()}; where it has no data: {self.fallback.describe()}"

    def segments(self, start: dt.datetime, end: dt.datetime) -> list[Segment]:
        s, e = check_window(start, end)
        if s == e:
            return []
        covered = _covered_part(self.primary, s, e)
        filled: list[Segment] = []
        for lo, hi in holes(covered, s, e):
            filled.extend(self.fallback.segments(lo, hi))
            self.fallback_s += (hi - lo).total_seconds()
        return sorted(covered + filled, key=lambda seg: seg.start)


def with_fallback(primary: IntensityProvider, fallback: IntensityProvider) -> IntensityProvider:
    return WithFallback(primary, fallback)


# --- registry, make_provider, specs -------------------------------------------------------------

CARBON_PROVIDERS.add("fixed", FixedIntensity)
CARBON_PROVIDERS.add("static", StaticIntensity)
CARBON_PROVIDERS.add("trace", TraceIntensity)


def _options(factory: Callable[..., Any]) -> tuple[list[str], list[str]]:
    """(all option names, required option names) of a provider factory."""
    params = [
        p
        for p in inspect.signature(factory).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    return [p.name for p in params], [p.name for p in params if p.default is p.empty]


def make_provider(name: str, **options: Any) -> IntensityProvider:
    """Provider ``name`` built with ``options``; ``fallback`` (a spec or a provider) wraps it."""
    fallback = options.pop("fallback", None)
    factory = CARBON_PROVIDERS.get(name)
    valid, required = _options(factory)
    for key in options:
        if key not in valid:
            raise ConfigError(
                f"carbon provider {name!r} has no option {key!r}; valid options: "
                f"{', '.join([*valid, 'fallback'])}"
            )
    for key in required:
        if key not in options:
            raise ConfigError(f"carbon provider {name!r} needs the option {key!r}")
    provider = factory(**options)
    if fallback is None:
        return provider
    if isinstance(fallback, str):
        fallback = parse_provider_spec(fallback)
    return WithFallback(provider, fallback)


def _fixed_argument(arg: str) -> dict[str, Any]:
    try:
        return {"intensity_g_per_kwh": float(arg)}
    except ValueError:
        raise ConfigError(f"fixed needs a number of g/kWh, e.g. fixed:250, got {arg!r}") from None


def _trace_argument(arg: str) -> dict[str, Any]:
    if not arg:
        raise ConfigError(
            "trace needs a file or directory, e.g. trace:/data/gb.csv or trace:/dir@GB"
        )
    path, at, zone = arg.rpartition("@")
    # A zone is short and plain; '@' followed by a path or file name belongs to the path.
    if at and zone and not re.search(r"[/\\.]", zone):
        return {"path": path, "zone": zone}
    return {"path": arg}


SPEC_ARGUMENTS.add("fixed", _fixed_argument)
SPEC_ARGUMENTS.add("static", lambda arg: {"region": arg} if arg else {})
SPEC_ARGUMENTS.add("trace", _trace_argument)


def _parse_single(spec: str) -> IntensityProvider:
    name, _, arg = spec.partition(":")
    name, arg = name.strip().lower(), arg.strip()
    if name not in CARBON_PROVIDERS:
        raise ConfigError(
            f"unknown carbon provider {name!r} in spec {spec!r}; valid: "
            f"{', '.join(CARBON_PROVIDERS.names())} (e.g. static:DE, fixed:250, trace:/dir@GB)"
        )
    if name in SPEC_ARGUMENTS:
        return make_provider(name, **SPEC_ARGUMENTS.get(name)(arg))
    if arg:
        raise ConfigError(f"carbon provider spec {spec!r}: {name} takes no argument")
    return make_provider(name)


def parse_provider_spec(spec: str) -> IntensityProvider:
    """A provider from a short spec (grammar in the module docstring)."""
    parts = [part.strip() for part in spec.split("|")]
    if not all(parts):
        raise ConfigError(
            f"empty carbon provider spec in {spec!r}; e.g. static:DE or trace:/dir@GB|static:GB"
        )
    provider = _parse_single(parts[-1])
    for part in reversed(parts[:-1]):
        provider = WithFallback(_parse_single(part), provider)
    return provider


# --- emissions ---------------------------------------------------------------------------------


def emissions_g(
    energy_j: float,
    start: dt.datetime,
    end: dt.datetime,
    provider: IntensityProvider,
    pue: float = 1.0,
) -> tuple[float, float]:
    """(emissions_g, time-weighted mean intensity_g_per_kwh) of energy spent evenly in a window.

    Spreading the energy uniformly over [start, end) means each segment gets its share of the
    time, so the grams are energy x PUE x the time-weighted mean intensity.
    """
    if not pue >= 1.0:
        raise ConfigError(f"PUE must be >= 1 (facility energy / IT energy), got {pue}")
    s, e = check_window(start, end)
    if s == e:
        intensity = provider.segments(s, s + _US)[0].intensity_g_per_kwh
    else:
        weighted_us = sum(
            ((seg.end - seg.start) // _US) * seg.intensity_g_per_kwh
            for seg in provider.segments(s, e)
        )
        intensity = weighted_us / ((e - s) // _US)
    return energy_j / J_PER_KWH * intensity * pue, intensity


# At the end because carbon_api builds on the trace above; importing it registers the live APIs.
from greentune.energy import carbon_api  # noqa: E402, F401
