"""Turn a raw table into a clean, regularly spaced, time-indexed frame, or say exactly why not.

Every refusal names the file, the column and the row (1-based data row, header excluded) and
what to do about it. Non-fatal findings (filled gaps, missing values) go into a report.

A long file (one row per time and series, ``data.series_col``) is first cut to the one series
asked for (``data.series``); its rows keep their numbers in the file.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

from greentune.config import DataConfig
from greentune.data.features import calendar_features, hinge_features
from greentune.data.sources import RawTable
from greentune.errors import ConfigError, DataError


@dataclass
class DataReport:
    """What validation found: shown by ``greentune data check`` and stored in metrics.json."""

    origin: str
    rows: int = 0
    start: str = ""
    end: str = ""
    step: str = ""
    gaps: list[tuple[str, str]] = field(default_factory=list)
    filled_steps: int = 0
    missing_values: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """What may mislead the scores (near-zero observed values under MAPE): the log, ``data
    check`` and the run's table repeat them."""


def model_columns(cfg: DataConfig) -> list[str]:
    cols = [cfg.target] if cfg.target else []
    return [*cols, *(cfg.covariates or ()), *cfg.past_covariates]


def clean_frame(table: RawTable, cfg: DataConfig) -> tuple[pd.DataFrame, DataReport]:
    """Index by time, check columns and spacing; return the frame of model columns + report."""
    frame, origin = table.frame, table.origin
    if frame.empty:
        raise DataError(f"{origin}: the table is empty")
    notes: list[str] = []
    frame, origin, rows = _one_series(frame, cfg, origin, notes)
    report = DataReport(origin=origin, notes=notes)
    time_col = _require_time_col(frame, cfg, origin)
    columns = _resolve_columns(frame, cfg, origin)
    index = pd.DatetimeIndex(_parse_times(frame[time_col], cfg, origin, time_col, rows))
    # before the values: a long file's first fault is its repeated times, whose message names
    # the series column (with data.multivariate that column is not numeric either)
    _check_order(index, origin, time_col, rows, frame)
    # a wide multivariate file takes every column as a target: no setting leaves one out
    todo = (
        "with data.multivariate every column but the time column is a target: remove this "
        "column from the file"
        if cfg.multivariate and not cfg.series_col
        else None
    )
    data = pd.DataFrame(
        {c: _numeric(frame[c], origin, c, rows, todo) for c in columns}, index=index
    )
    data.index.name = "time"
    step = _modal_step(data.index, origin)
    data = _handle_gaps(data, step, cfg, origin, report, rows)
    report.rows = len(data)
    report.start, report.end, report.step = str(data.index[0]), str(data.index[-1]), str(step)
    report.missing_values = {c: int(n) for c, n in data.isna().sum().items() if n}
    return data, report


def _one_series(
    frame: pd.DataFrame, cfg: DataConfig, origin: str, notes: list[str]
) -> tuple[pd.DataFrame, str, np.ndarray]:
    """The rows of ``data.series`` in a long file, without ``data.series_col``, and their
    1-based row numbers in the file. A table without that column is taken as the one series
    (a request to a served model, or the series' own file); rows whose series cell is empty
    belong to no series."""
    col = cfg.series_col
    if not col or col not in frame.columns:
        return frame, origin, np.arange(1, len(frame) + 1)
    labels = _labels(frame[col])
    found = sorted(labels.dropna().unique())
    if cfg.series is None and cfg.multivariate:
        return _all_series(frame, cfg, origin, labels, found, notes)
    if cfg.series is None:
        raise DataError(
            f"{origin}: column {col!r} (data.series_col) names {len(found)} series "
            f"({_listing(found)}); pick one with data.series=<name> (--series {col}=<name>), "
            "forecast all of them with one model (data.multivariate=true "
            f"data.channel_independent=true), or train one across them whose data stay apart "
            f"with greentune federate --partition-col {col}"
        )
    keep = (labels == cfg.series).to_numpy()
    if pd.api.types.is_numeric_dtype(frame[col]) and not keep.any():
        # a CSV reader makes "010" the number 10: a name that is a number matches its value
        with contextlib.suppress(ValueError):
            keep = (frame[col] == float(cfg.series)).to_numpy()
    if not keep.any():
        raise DataError(
            f"{origin}: no row has {col} = {cfg.series!r} (data.series); the series are: "
            f"{_listing(found)}"
        )
    rows = np.flatnonzero(keep) + 1
    one = frame.loc[keep].drop(columns=[col]).reset_index(drop=True)
    return one, f"{origin} [{col}={cfg.series}]", rows


def _all_series(
    frame: pd.DataFrame,
    cfg: DataConfig,
    origin: str,
    labels: pd.Series,
    found: list[str],
    notes: list[str],
) -> tuple[pd.DataFrame, str, np.ndarray]:
    """Every series of a long file as a column of its own (``data.multivariate``): one row per
    time, the target's values per series; the rows are numbered by each time's first row in
    the file. The rows may come in any order (by series, by time)."""
    col, target = str(cfg.series_col), cfg.target
    time_col = _require_time_col(frame, cfg, origin)
    if not target:
        raise DataError(
            f"{origin}: name the long file's value column with --target (data.target); each "
            f"series of {col!r} becomes a target of its own"
        )
    shared = [*(cfg.covariates or ()), *cfg.past_covariates]
    if cfg.temperature_col and cfg.temperature_col not in shared:
        shared.append(cfg.temperature_col)
    if shared:
        raise ConfigError(
            f"data.multivariate over the series of a long file reads the target only: "
            f"covariates ({', '.join(shared)}) differ per series, and one model's covariates are "
            "shared by all of them; leave data.covariates and data.temperature_col out, or "
            "forecast one series with data.series"
        )
    if target not in frame.columns:
        raise DataError(
            f"{origin}: column {target!r} not found; columns are: "
            f"{', '.join(map(str, frame.columns))}"
        )
    _check_names(frame[col], labels, found, origin, col)
    named = labels.notna().to_numpy()
    rows = np.flatnonzero(named) + 1
    frame, labels = frame.loc[named], labels[named]
    times = _series_times(frame[time_col], labels.to_numpy(), cfg, origin, time_col, rows)
    values = _numeric(frame[target], origin, target, rows)
    long = pd.DataFrame({"time": times, "series": labels.to_numpy(), "value": values, "row": rows})
    repeated = long.duplicated(["time", "series"]).to_numpy()
    if repeated.any():
        k = int(np.argmax(repeated))
        name = long.series.iloc[k]
        mine = int((repeated & (long.series == name).to_numpy()).sum())
        raise DataError(
            f"{origin}: series {name!r} has {mine} repeated time(s) in column {time_col!r} "
            f"({int(repeated.sum())} in all series), first {long.time.iloc[k]} at row {rows[k]}; "
            "aggregate or remove duplicates"
        )
    wide = long.pivot(index="time", columns="series", values="value")[found]
    first = long.groupby("time")["row"].min().loc[wide.index].to_numpy()
    origin = f"{origin} [{col}: {len(found)} series]"
    wide = _fill_absent(wide, long, cfg, origin, notes)
    out = wide.rename_axis(columns=None).rename_axis(time_col).reset_index()
    return out, origin, first


def _check_names(
    values: pd.Series, labels: pd.Series, found: list[str], origin: str, col: str
) -> None:
    """Series names that would become clashing column names: a generated feature's (or the
    index's), or two distinct values read as one name (1 and "1")."""
    probe = pd.DatetimeIndex([pd.Timestamp("2020-01-01")])
    reserved = {"time", "holiday", *calendar_features(probe).columns}
    reserved |= set(hinge_features(pd.Series([0.0], index=probe)).columns)
    clash = [n for n in found if n in reserved]
    if clash:
        raise DataError(
            f"{origin}: series named {', '.join(map(repr, clash))} in column {col!r} would take "
            "the name of a feature greentune adds; rename them in the file"
        )
    distinct = values[labels.notna()].groupby(labels[labels.notna()].to_numpy()).nunique()
    merged = [str(n) for n, k in distinct.items() if k > 1]
    if merged:
        raise DataError(
            f"{origin}: column {col!r} holds different values read as the same name "
            f"{', '.join(map(repr, merged))}; make each series' name unique in the file"
        )


def _series_times(
    col: pd.Series,
    labels: np.ndarray,
    cfg: DataConfig,
    origin: str,
    name: str,
    rows: np.ndarray,
) -> pd.DatetimeIndex:
    """Each series' times parsed on their own, in file order: naive local times are placed in
    ``data.timezone`` per series, since a repeated autumn hour only reads as one when a
    series' own rows are taken together."""
    ns = np.empty(len(col), dtype="int64")
    zones = set()
    for label in pd.unique(labels):
        sel = np.flatnonzero(labels == label)
        parsed = _parse_times(col.iloc[sel], cfg, origin, name, rows[sel])
        zones.add(str(parsed.tz) if parsed.tz is not None else None)
        ns[sel] = (parsed.tz_convert("UTC").tz_localize(None) if parsed.tz else parsed).asi8
    if zones == {None}:
        return pd.DatetimeIndex(ns)
    utc = pd.DatetimeIndex(ns).tz_localize("UTC")
    return utc.tz_convert(zones.pop()) if len(zones) == 1 else utc


def _fill_absent(
    wide: pd.DataFrame, long: pd.DataFrame, cfg: DataConfig, origin: str, notes: list[str]
) -> pd.DataFrame:
    """One model reads every series at every time: a series that starts later or ends sooner
    than the others is refused (cut the file to the times they share), as are series on other
    time grids; a time a series lacks between its first and last row is a gap of that series,
    refused or interpolated in time with ``data.fill_gaps``."""
    present = long.assign(one=1.0).pivot(index="time", columns="series", values="one")
    present = present.reindex(index=wide.index, columns=wide.columns).notna()
    starts = {c: wide.index[present[c].to_numpy()][0] for c in wide.columns}
    ends = {c: wide.index[present[c].to_numpy()][-1] for c in wide.columns}
    start, end = max(starts.values()), min(ends.values())
    short = [c for c in wide.columns if starts[c] > wide.index[0] or ends[c] < wide.index[-1]]
    if short:
        spans = ", ".join(f"{c} {starts[c]} .. {ends[c]}" for c in short[:5])
        more = f" and {len(short) - 5} more" if len(short) > 5 else ""
        common = f"from {start} to {end}" if start < end else "none"
        raise DataError(
            f"{origin}: one model across the series needs each of them at every time of "
            f"{wide.index[0]} .. {wide.index[-1]}; these start later or end sooner: {spans}{more}. "
            f"Cut the file to the times they share ({common}), leave those series out, or "
            "forecast them one at a time (data.series)"
        )
    gaps = ~present
    if not gaps.to_numpy().any():
        return wide
    counts = gaps.sum()
    name = next(str(c) for c in wide.columns if gaps[c].any())
    worst = str(counts.idxmax())
    if counts[worst] > 0.1 * len(wide):
        raise DataError(
            f"{origin}: series {worst!r} has no row at {int(counts[worst])} of the "
            f"{len(wide)} times the series have together: they are not on one time grid; "
            "resample them to one step"
        )
    if not cfg.fill_gaps:
        raise DataError(
            f"{origin}: series {name!r} has no row at {int(counts[name])} time(s) the others "
            f"have, first {gaps.index[gaps[name].to_numpy()][0]} ({int(counts.sum())} in all "
            "series); fill them in the file or set data.fill_gaps=true (--fill-gaps) to "
            "interpolate"
        )
    filled = wide.copy()
    for c in wide.columns:
        if gaps[c].any():
            line = wide[c].interpolate(method="time", limit_area="inside")
            filled.loc[gaps[c].to_numpy(), c] = line[gaps[c].to_numpy()]
    notes.append(
        f"filled {int(counts.sum())} times absent from {int((counts > 0).sum())} series that "
        "the others have"
    )
    return filled


def _labels(col: pd.Series) -> pd.Series:
    """A series column's values as the names ``data.series`` gives: numbers without a ".0"
    (a numeric column with an empty cell reads as floats), empty cells as missing."""
    if pd.api.types.is_integer_dtype(col):  # exact: an 18-digit meter ID is not a float
        named = col.map(lambda v: str(int(v)) if pd.notna(v) else None)
    elif pd.api.types.is_numeric_dtype(col):
        named = col.map(lambda v: f"{v:.15g}" if pd.notna(v) else None)
    else:
        named = col.map(lambda v: str(v) if pd.notna(v) else None)
    return named.astype(object)


def _listing(names: list[str], most: int = 12) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _series_columns(frame: pd.DataFrame, time_col: str, repeated: int) -> list[str]:
    """Columns that could name each row's series in a long file: text columns of a few values
    after which no (value, time) pair repeats. Only where times repeat on a tenth of the rows
    or more: a daylight-saving flag also separates the repeated hour of naive local times."""
    if repeated < 0.1 * len(frame) or frame.columns.duplicated().any():
        return []
    out = []
    for col in frame.columns:
        if col == time_col or pd.api.types.is_numeric_dtype(frame[col]):
            continue
        n = frame[col].nunique()
        if 1 < n <= len(frame) // 2 and not frame.duplicated([col, time_col]).any():
            out.append(str(col))
    return out


def _require_time_col(frame: pd.DataFrame, cfg: DataConfig, origin: str) -> str:
    if not cfg.time_col:
        raise DataError(
            f"{origin}: name the time column with --time-col (data.time_col); "
            f"columns are: {', '.join(map(str, frame.columns))}"
        )
    if cfg.time_col not in frame.columns:
        raise DataError(
            f"{origin}: time column {cfg.time_col!r} not found; "
            f"columns are: {', '.join(map(str, frame.columns))}"
        )
    return cfg.time_col


def _resolve_columns(frame: pd.DataFrame, cfg: DataConfig, origin: str) -> list[str]:
    if cfg.multivariate:
        skip = {cfg.time_col}
        return [c for c in frame.columns if c not in skip]
    if not cfg.target:
        raise DataError(f"{origin}: name the target column with --target (data.target)")
    wanted = model_columns(cfg)
    unknown = [c for c in wanted if c not in frame.columns]
    if unknown:
        raise DataError(
            f"{origin}: column(s) {', '.join(map(repr, unknown))} named in the config not found; "
            f"columns are: {', '.join(map(str, frame.columns))}"
        )
    return list(dict.fromkeys(wanted))


def _parse_times(
    col: pd.Series, cfg: DataConfig, origin: str, name: str, rows: np.ndarray
) -> pd.DatetimeIndex:
    missing = col.isna().to_numpy()
    if missing.any():
        row = int(rows[int(np.argmax(missing))])
        raise DataError(
            f"{origin}: column {name!r} has {int(missing.sum())} missing timestamp(s), "
            f"first at row {row}; fill or remove those rows"
        )
    try:
        parsed = pd.to_datetime(col)
    except (ValueError, TypeError):
        try:  # mixed UTC offsets (e.g. across daylight saving) parse as UTC instants
            parsed = pd.to_datetime(col, utc=True)
        except (ValueError, TypeError):
            # ISO stamps of mixed precision: '2021-01-01' at midnight, then '01:00:00' (as UTC
            # instants when every one has an offset; a stamp without one is never taken as UTC)
            every = all(_has_offset(str(v)) for v in col.tolist())
            try:
                parsed = pd.to_datetime(col, format="ISO8601", utc=every)
            except (ValueError, TypeError):
                raise DataError(_unparseable(col, origin, name, rows)) from None
    index = pd.DatetimeIndex(parsed).as_unit("ns")
    if cfg.timezone:
        if index.tz is None:
            index = _localise(index, cfg.timezone, origin, name, rows)
        else:
            try:
                index = index.tz_convert(cfg.timezone)
            except Exception:  # zoneinfo/pytz raise their own types for an unknown zone
                raise DataError(
                    f"data.timezone={cfg.timezone!r} is not a known time zone; "
                    "use an IANA name such as Europe/Berlin or Australia/Melbourne"
                ) from None
    return index


def _localise(
    index: pd.DatetimeIndex, tz: str, origin: str, name: str, rows: np.ndarray
) -> pd.DatetimeIndex:
    try:
        placed = index.tz_localize(tz, ambiguous="infer", nonexistent="NaT")
        # a local time the clocks skip: shifted forward it would collide with the next row
        # and be reported as a duplicate of a row the file has once
        skipped = np.asarray(placed.isna())
        if skipped.any():
            i = int(np.argmax(skipped))
            raise DataError(
                f"{origin}: column {name!r} row {rows[i]}: {index[i]} does not exist in {tz} "
                "(the clocks skip it when daylight saving starts); drop that row, or leave "
                "data.timezone unset if the file's times are not local"
            )
        return placed
    except DataError:
        raise
    except Exception as exc:  # pytz/zoneinfo raise several types
        raise DataError(
            f"{origin}: column {name!r}: naive local times cannot be placed in {tz} ({exc}); "
            "write timestamps with a UTC offset"
        ) from None


def _unparseable(col: pd.Series, origin: str, name: str, rows: np.ndarray) -> str:
    """Why the column is no timestamps: the first cell that is none, or else (each cell
    parses alone) the first written otherwise than row 1, whose format pandas applies to all."""
    values = col.tolist()
    for i, value in enumerate(values):
        try:
            pd.Timestamp(value)
        except (ValueError, TypeError):
            return f"{origin}: column {name!r} row {rows[i]}: cannot parse {value!r} as a timestamp"
    first = str(values[0])
    fmt = guess_datetime_format(first)
    read = None
    if fmt is not None:
        with contextlib.suppress(ValueError, TypeError):  # pandas refuses some mixes outright
            read = pd.to_datetime(col.astype(str), format=fmt, errors="coerce", utc="%z" in fmt)
    if fmt is not None and read is not None and read.isna().any():
        i = int(np.argmax(read.isna().to_numpy()))
        offsets = "%z" in fmt and not _has_offset(str(values[i]))
        return (
            f"{origin}: column {name!r} row {rows[i]}: {values[i]!r} is not written as row "
            f"{rows[0]} ({first!r}, read as {fmt}"
            + ("; that one has a UTC offset, this one none" if offsets else "")
            + "); write every timestamp the same way"
        )
    return (
        f"{origin}: column {name!r}: its timestamps are written in several ways (row {rows[0]}: "
        f"{first!r}); write every timestamp the same way"
    )


def _has_offset(text: str) -> bool:
    return bool(re.search(r"(Z|[+-]\d{2}:?\d{2})$", text.strip()))


def _numeric(
    col: pd.Series, origin: str, name: str, rows: np.ndarray, todo: str | None = None
) -> np.ndarray:
    if pd.api.types.is_bool_dtype(col):
        return col.astype(float).to_numpy()
    values = pd.to_numeric(col, errors="coerce")
    bad = values.isna() & col.notna()
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        raise DataError(
            f"{origin}: column {name!r} is not numeric: row {rows[row]} holds {col.iloc[row]!r}; "
            + (todo or "fix the value or leave the column out of the config")
        )
    out = values.astype(float).to_numpy()
    infinite = np.isinf(out)
    if infinite.any():  # "inf" or 1e400 parse, and would turn the scaler's statistics to NaN
        row = int(np.argmax(infinite))
        raise DataError(
            f"{origin}: column {name!r} holds {col.iloc[row]!r} (infinite) at row {rows[row]}; "
            "fix the value or leave it empty (missing)"
        )
    return out


def _check_order(
    index: pd.DatetimeIndex, origin: str, name: str, rows: np.ndarray, frame: pd.DataFrame
) -> None:
    dup = index.duplicated()
    if dup.any():
        row = int(np.argmax(dup))
        long = _series_columns(frame, name, int(dup.sum()))
        todo = (
            f"it looks like a long file, one row per time and {long[0]!r}: forecast one series "
            f"with data.series_col={long[0]} data.series=<name> (--series {long[0]}=<name>), "
            "or all of them with one model, adding data.multivariate=true "
            "data.channel_independent=true"
            if long
            else "aggregate or remove duplicates"
        )
        raise DataError(
            f"{origin}: column {name!r} has {int(dup.sum())} duplicate timestamp(s), first "
            f"{index[row]} at row {rows[row]}; {todo}"
        )
    if not index.is_monotonic_increasing:
        diffs = np.diff(index.asi8)
        row = int(np.argmax(diffs < 0)) + 1
        raise DataError(
            f"{origin}: column {name!r} is not sorted: row {rows[row]} ({index[row]}) comes "
            f"before row {rows[row - 1]} ({index[row - 1]}); sort the file by time"
        )


def _modal_step(index: pd.DatetimeIndex, origin: str) -> pd.Timedelta:
    if len(index) < 3:
        raise DataError(f"{origin}: only {len(index)} rows; a series needs many more")
    diffs = pd.Series(np.diff(index.asi8))
    return pd.Timedelta(int(diffs.mode().iloc[0]), unit="ns")


def _handle_gaps(
    data: pd.DataFrame,
    step: pd.Timedelta,
    cfg: DataConfig,
    origin: str,
    report: DataReport,
    rows: np.ndarray,
) -> pd.DataFrame:
    diffs = np.diff(data.index.as_unit("ns").asi8)
    # days in a zone with daylight saving last 23 or 25 hours: daily (weekly) rows off the grid
    # in absolute time may be on it on the wall clock, where the check then runs
    calendar = (
        data.index.tz is not None
        and step % pd.Timedelta("1D") == pd.Timedelta(0)
        and bool((diffs % step.value != 0).any())
    )
    if calendar:
        diffs = np.diff(data.index.tz_localize(None).as_unit("ns").asi8)
    irregular = np.flatnonzero(diffs != step.value)
    if len(irregular) == 0:
        return data
    off_grid = [i for i in irregular if diffs[i] % step.value != 0]
    if off_grid:
        i = off_grid[0]
        raise DataError(
            f"{origin}: row {rows[i + 1]} ({data.index[i + 1]}) is off the {step} grid of the "
            "series; "
            "resample the data to one regular step"
        )
    report.gaps = [(str(data.index[i]), str(data.index[i + 1])) for i in irregular]
    missing_steps = int(sum(diffs[i] // step.value - 1 for i in irregular))
    if not cfg.fill_gaps:
        first = report.gaps[0]
        raise DataError(
            f"{origin}: {len(irregular)} gap(s) in the time index ({missing_steps} missing "
            f"steps of {step}), first between {first[0]} and {first[1]}; "
            "fill them in the file or set data.fill_gaps=true (--fill-gaps) to interpolate"
        )
    days = pd.offsets.Day(step // pd.Timedelta("1D")) if calendar else step
    full = pd.date_range(data.index[0], data.index[-1], freq=days)
    filled = data.reindex(full)
    # only the absent times: a value missing in a row the file has stays missing, so the
    # windows it touches are dropped and counted instead of scored against an invented truth
    absent = ~full.isin(data.index)
    filled.loc[absent] = filled.interpolate(method="time", limit_area="inside").loc[absent]
    filled.index.name = "time"
    report.filled_steps = missing_steps
    report.notes.append(f"filled {missing_steps} missing steps in {len(irregular)} gap(s)")
    return filled
