"""Carbon-intensity traces from CSV files: a generic ``timestamp,intensity`` layout and the
Electricity Maps export, one file, a list, or a directory of ``ZONE_YEAR_hourly.csv`` files.

Registers the ``trace`` provider (and its spec argument) where it is defined.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from greentune.energy.base import Segment
from greentune.energy.intensity import (
    CARBON_PROVIDERS,
    SPEC_ARGUMENTS,
    Basis,
    IntensityTrace,
    _from_ns,
    fmt_step,
    fmt_time,
)
from greentune.errors import ConfigError, EnergyError

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
        # Electricity Maps renamed some zones, and rows keep the old id (DE-LU_2023_hourly.csv
        # holds "DE"): an id that the asked zone extends ("DE" for "DE-LU") is that zone.
        other = {z for z in zones - {zone or ""} if not (zone or "").startswith(f"{z}-")}
        if zone and other:
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


CARBON_PROVIDERS.add("trace", TraceIntensity)
SPEC_ARGUMENTS.add("trace", _trace_argument)
