"""Chronological splits, train-only scaling and forecast windows.

Windows are not materialised: a split holds the positions of its forecast origins (the first
horizon step) into one scaled matrix, and ``batch`` gathers a batch by fancy indexing. That keeps
memory at one copy of the series however many overlapping windows there are.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from greentune.config import DataConfig
from greentune.data.features import add_features, check_temperature
from greentune.data.shape import channels_of, resolve_shape
from greentune.data.sources import load_table, resolve
from greentune.data.validate import DataReport, clean_frame
from greentune.errors import ConfigError, DataError

_DURATION = re.compile(r"^\d+(\.\d+)?\s*[A-Za-z]+$")


@dataclass
class Scaler:
    """Per-column z-score fitted on training rows only."""

    mean: np.ndarray
    std: np.ndarray

    def to_dict(self, columns: list[str]) -> dict[str, object]:
        return {"columns": columns, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, raw: dict[str, list[float]]) -> Scaler:
        return cls(np.asarray(raw["mean"], dtype=float), np.asarray(raw["std"], dtype=float))

    @classmethod
    def fit(cls, values: np.ndarray, enabled: bool = True) -> Scaler:
        if not enabled:
            return cls(np.zeros(values.shape[1]), np.ones(values.shape[1]))
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0)
        return cls(mean, np.where(std > 1e-12, std, 1.0))

    @classmethod
    def from_bounds(
        cls, columns: list[str], raw: list[str], bounds: dict[str, tuple[float, float]], origin: str
    ) -> Scaler:
        """Fitted on nothing: each raw column's public [low, high] maps to [-1, 1]; the
        generated features (calendar, hinges) are already of order one and stay as they are."""
        missing = [c for c in raw if c not in bounds]
        if missing:
            raise DataError(
                f"{origin}: data.scaler=bounds needs a public range for "
                + ", ".join(missing)
                + "; set data.bounds."
                + f"{missing[0]}=[low, high] (e.g. the rated capacity: not the data's own min "
                "and max, which would leak it)"
            )
        mean, std = np.zeros(len(columns)), np.ones(len(columns))
        for i, col in enumerate(columns):
            if col in raw:
                lo, hi = bounds[col]
                mean[i], std[i] = (lo + hi) / 2, (hi - lo) / 2
        return cls(mean, std)

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std


@dataclass
class WindowSet:
    """Forecast origins of one split, as positions into ``ForecastData.scaled``."""

    name: str
    origins: np.ndarray

    def __len__(self) -> int:
        return len(self.origins)


@dataclass
class ForecastData:
    """Everything the models and baselines need, in one place."""

    frame: pd.DataFrame
    """Unscaled model columns + features, regular time index."""
    target_cols: list[str]
    past_cols: list[str]
    known_cols: list[str]
    scaler: Scaler
    scaled: np.ndarray
    """float32 matrix, columns ordered targets + past + known."""
    context_length: int
    horizon: int
    val_start: int
    test_start: int
    train: WindowSet
    val: WindowSet
    test: WindowSet
    report: DataReport
    dropped_windows: dict[str, int] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict, repr=False)
    """Fits derived from this data alone (the ridge fit shared by the skip path and `linear`)."""
    channel_independent: bool = False
    """Models see each target as its own series (``fold_channels``)."""
    config: DataConfig | None = None
    """The data config these windows were cut with, every shape setting concrete."""

    @property
    def columns(self) -> list[str]:
        return [*self.target_cols, *self.past_cols, *self.known_cols]

    @property
    def step(self) -> pd.Timedelta:
        """The regular step of the index."""
        return pd.Timedelta(self.frame.index[1] - self.frame.index[0])

    @property
    def n_targets(self) -> int:
        return len(self.target_cols)

    @property
    def series_targets(self) -> int:
        """Targets one model row forecasts: 1 when channel-independent (``fold_channels``)."""
        return 1 if self.channel_independent else self.n_targets

    @property
    def series_channels(self) -> int:
        """Columns of one model row's context: a channel-independent row holds one target."""
        return len(self.columns) - (self.n_targets - 1 if self.channel_independent else 0)

    @property
    def known_slice(self) -> slice:
        start = len(self.target_cols) + len(self.past_cols)
        return slice(start, start + len(self.known_cols))

    def split(self, name: str) -> WindowSet:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def batch(self, origins: np.ndarray) -> dict[str, np.ndarray]:
        """past (B, L, C), future known covariates (B, H, K) and targets y (B, H, T), scaled."""
        return gather(
            self.scaled,
            origins,
            self.context_length,
            self.horizon,
            self.n_targets,
            self.known_slice,
        )

    def unscale_target(self, values: np.ndarray) -> np.ndarray:
        """Map scaled targets (..., T) back to data units."""
        t = self.n_targets
        return values * self.scaler.std[:t] + self.scaler.mean[:t]

    def target_values(self) -> np.ndarray:
        """Unscaled targets (n, T)."""
        return self.frame[self.target_cols].to_numpy(dtype=float)

    def horizon_times(self, origins: np.ndarray) -> np.ndarray:
        return np.asarray(self.frame.index)[origins[:, None] + np.arange(self.horizon)]


def prepare_forecast_data(cfg: DataConfig) -> ForecastData:
    """Load, validate, featurise, split, scale and index windows for ``cfg`` (resolved)."""
    cfg = resolve(cfg)
    frame, report = clean_frame(load_table(cfg), cfg)
    return build_forecast_data(frame, cfg, report)


def featurize(
    frame: pd.DataFrame, cfg: DataConfig
) -> tuple[pd.DataFrame, list[str], list[str], list[str]]:
    """Add features; return (frame ordered targets + past + known, targets, past, known)."""
    if cfg.multivariate:
        target_cols = list(frame.columns)
        past_cols: list[str] = []
        covs: list[str] = []
    else:
        assert cfg.target is not None
        target_cols = [cfg.target]
        past_cols = [c for c in cfg.past_covariates if c != cfg.target]
        covs = [c for c in (cfg.covariates or ()) if c not in (cfg.target, *past_cols)]
    frame, added = add_features(frame, cfg)
    known_cols = [*covs, *added]
    return frame[[*target_cols, *past_cols, *known_cols]], target_cols, past_cols, known_cols


def fold_channels(
    past: np.ndarray, future: np.ndarray, y: np.ndarray, n_targets: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Channel independence: (B, L, C), (B, H, K), (B, H, T) -> (B*T, L, 1 + C - T),
    (B*T, H, K), (B*T, H, 1). Row b*T + t holds target t's own history, then the shared
    covariates; the same order as ``Forecaster`` folds its tensors."""
    b, length, _ = past.shape
    t = n_targets
    own = past[..., :t].transpose(0, 2, 1).reshape(b * t, length, 1)
    shared = np.repeat(past[..., t:], t, axis=0)
    folded_y = y.transpose(0, 2, 1).reshape(b * t, y.shape[1], 1)
    return np.concatenate([own, shared], axis=-1), np.repeat(future, t, axis=0), folded_y


def unfold_targets(values: np.ndarray, n_targets: int) -> np.ndarray:
    """(B*T, H, ...) rows of folded targets back to (B, H, T, ...)."""
    rest = values.shape[2:]
    out = values.reshape(-1, n_targets, values.shape[1], *rest)
    return np.moveaxis(out, 1, 2)


def gather(
    scaled: np.ndarray,
    origins: np.ndarray,
    context_length: int,
    horizon: int,
    n_targets: int,
    known: slice,
) -> dict[str, np.ndarray]:
    """past (B, L, C), future known covariates (B, H, K) and targets y (B, H, T), scaled."""
    ctx = origins[:, None] + np.arange(-context_length, 0)
    hor = origins[:, None] + np.arange(horizon)
    future = scaled[hor]
    return {"past": scaled[ctx], "future": future[..., known], "y": future[..., :n_targets]}


def build_forecast_data(frame: pd.DataFrame, cfg: DataConfig, report: DataReport) -> ForecastData:
    """Windows of ``frame`` (cleaned); settings left unset are chosen from the data first."""
    cfg, _ = resolve_shape(cfg, frame.index, report.origin, channels_of(cfg, frame))
    report.notes.extend(f"chosen from the data: {note}" for note in cfg.chosen)
    assert isinstance(cfg.context_length, int) and isinstance(cfg.horizon, int)
    assert cfg.val is not None and cfg.test is not None
    check_temperature(cfg)
    frame, target_cols, past_cols, known_cols = featurize(frame, cfg)
    n = len(frame)
    test_start = _split_start(cfg.test, frame.index, n, n, "data.test")
    val_start = _split_start(cfg.val, frame.index, test_start, n, "data.val")
    L, H = cfg.context_length, cfg.horizon
    _check_sizes(report.origin, n, val_start, test_start, L, H)
    values = frame.to_numpy(dtype=float)
    if cfg.scaler == "bounds":
        raw = [c for c in frame.columns if c not in known_cols or c in (cfg.covariates or ())]
        scaler = Scaler.from_bounds(list(frame.columns), raw, cfg.bounds, report.origin)
    else:
        scaler = Scaler.fit(values[:val_start], enabled=cfg.scaler == "standard")
        # Calendar, holiday and degree-hinge features are of order one by construction; a
        # z-score of one that barely moves in training (a cooling hinge over a winter) would
        # blow its test values up a thousandfold.
        for i, col in enumerate(frame.columns):
            if col in known_cols and col not in (cfg.covariates or ()):
                scaler.mean[i], scaler.std[i] = 0.0, 1.0
    scaled = scaler.transform(values).astype(np.float32)
    bad_rows: np.ndarray = np.asarray(np.isnan(scaled).any(axis=1))
    dropped: dict[str, int] = {}
    test_o = _origins(frame.index, test_start, n - H + 1, cfg.eval_origins, "eval_origins")
    if cfg.match_origins:
        train_o = _origins(frame.index, L, val_start - H + 1, "daily", "eval_origins")
        val_o = _origins(frame.index, val_start, test_start - H + 1, "daily", "eval_origins")
        report.notes.append(
            f"data.match_origins: training ({len(train_o)}) and validation ({len(val_o)}) "
            "windows start at local midnight only, as the test's"
        )
    else:
        assert cfg.val_origins is not None  # chosen from the data when unset
        stride = cfg.train_stride or 1
        first = L
        if cfg.train_phase == "test" and len(test_o):  # why: DataConfig.train_phase
            first = L + (int(test_o[0]) - L) % stride  # congruent to the test's first origin
        train_o = np.arange(first, val_start - H + 1, stride)
        val_o = _origins(frame.index, val_start, test_start - H + 1, cfg.val_origins, "val_origins")
    train = _windows("train", train_o, bad_rows, L, H, dropped)
    val = _windows("val", val_o[val_o >= L], bad_rows, L, H, dropped)
    test = _windows("test", test_o[test_o >= L], bad_rows, L, H, dropped)
    for ws in (train, val, test):
        if len(ws) == 0 and dropped.get(ws.name):
            raise DataError(
                f"{report.origin}: no complete {ws.name} window of {L}+{H} steps without missing "
                f"values; shorten data.context_length or change the splits (data.val, data.test)"
            )
        if len(ws) == 0:  # no origin at all: daily origins where the zone has no midnight
            daily = (ws.name == "test" and cfg.eval_origins == "daily") or cfg.match_origins
            raise DataError(
                f"{report.origin}: no {ws.name} window: no forecast origin"
                + (
                    " at local midnight (data.eval_origins: daily; a zone whose steps skip "
                    "midnight, such as hourly data in Asia/Kolkata, has none): give "
                    "data.eval_origins a step count such as '1'"
                    if daily
                    else f" with {L} steps before it; change the splits (data.val, data.test)"
                )
            )
    if dropped:
        report.notes.append(
            "dropped windows with missing values: "
            + ", ".join(f"{k} {v}" for k, v in dropped.items())
        )
    scored = {"validation": val.origins, "test": test.origins}
    report.warnings.extend(near_zero_warnings(frame[target_cols], val_start, scored, H))
    scaled = np.nan_to_num(scaled, nan=0.0)
    return ForecastData(
        frame,
        target_cols,
        past_cols,
        known_cols,
        scaler,
        scaled,
        L,
        H,
        val_start,
        test_start,
        train,
        val,
        test,
        report,
        dropped,
        channel_independent=cfg.channel_independent,
        config=cfg,
    )


def with_scaler(data: ForecastData, scaler: Scaler) -> ForecastData:
    """``data`` scaled by ``scaler`` (a saved model's own): a run re-scored or compressed sees
    the inputs it was trained on, whichever scaling policy made them."""
    values = data.frame.to_numpy(dtype=float)
    scaled = np.nan_to_num(scaler.transform(values).astype(np.float32), nan=0.0)
    return dataclasses.replace(data, scaler=scaler, scaled=scaled, cache={})


def _split_start(spec: str, index: pd.DatetimeIndex, end: int, n: int, key: str) -> int:
    """Position where a split that ends at ``end`` starts; spec: fraction, duration or date."""
    spec = str(spec).strip()
    try:
        frac = float(spec)
    except ValueError:
        frac = None
    if frac is not None:
        if not 0.0 < frac < 1.0:
            raise ConfigError(f"{key}={spec} as a fraction must lie in (0, 1)")
        return end - max(1, round(n * frac))
    step = index[1] - index[0]
    if _DURATION.match(spec):
        try:
            span = pd.Timedelta(spec)
        except ValueError:
            raise ConfigError(f"{key}={spec!r}: not a duration such as '56D' or '12h'") from None
        edge = index[end - 1] + step if end > 0 else index[0]
        # Whole days are counted on the local calendar, so splits start at local midnight
        # across daylight-saving changes.
        whole_days = span % pd.Timedelta(days=1) == pd.Timedelta(0)
        edge = edge - (pd.DateOffset(days=span.days) if whole_days else span)
        return int(index.searchsorted(edge))
    try:
        stamp = pd.Timestamp(spec)
    except ValueError:
        raise ConfigError(
            f"{key}={spec!r}: give a fraction (0.1), a duration (56D) or a date (2014-11-06)"
        ) from None
    if index.tz is not None and stamp.tzinfo is None:
        stamp = stamp.tz_localize(index.tz)
    elif index.tz is None and stamp.tzinfo is not None:
        raise ConfigError(f"{key}={spec!r} has a time zone but the data's timestamps have none")
    pos = int(index.searchsorted(stamp))
    return min(pos, end)


def _check_sizes(origin: str, n: int, val_start: int, test_start: int, L: int, H: int) -> None:
    need_train = L + H
    if val_start < need_train or test_start - val_start < H or n - test_start < H:
        raise DataError(
            f"{origin}: too little data for windows of {L} context + {H} horizon steps: "
            f"{n} rows split into train {val_start}, val {test_start - val_start}, "
            f"test {n - test_start}; train needs >= {need_train} rows and val/test >= {H} each. "
            "Use more data, a shorter data.context_length, or smaller data.val/data.test"
        )


NEAR_ZERO = 0.1
"""An observed value below this share of its target's typical training |value| (the median,
or the mean where the median is 0) is near zero for MAPE: its error is divided by it."""
MAX_NAMED = 5
"""Columns a warning names at most (multivariate data may have hundreds)."""


def near_zero_warnings(
    targets: pd.DataFrame, val_start: int, scored: Mapping[str, np.ndarray], horizon: int
) -> list[str]:
    """Per scored split, the observed values its windows score (``origins`` + 0..horizon-1)
    that are near zero (``NEAR_ZERO``) but not zero (MAPE leaves exact zeros out). MAPE divides
    each error by its observed value, so a handful of them (a partial last day of an aggregated
    export, an outage) can outweigh every other window, and the ranking of models on MAPE."""
    from greentune.evaluate.metrics import MAPE_ZERO  # evaluate imports this module

    values = targets.to_numpy(dtype=float)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # a target with no training value
        train = np.abs(values[:val_start])
        typical = np.nanmedian(train, axis=0)
        typical = np.where(typical > 0, typical, np.nanmean(train, axis=0))
    out = []
    for split, origins in scored.items():
        rows = np.unique((np.asarray(origins)[:, None] + np.arange(horizon)).ravel())
        part = np.abs(values[rows])
        with np.errstate(invalid="ignore"):
            small = (part > MAPE_ZERO) & (part < NEAR_ZERO * typical)
        hit_rows, hit_cols = np.nonzero(small)
        if len(hit_rows) == 0:
            continue
        row, col = int(rows[hit_rows[0]]), int(hit_cols[0])
        columns = [str(c) for c in targets.columns[np.unique(hit_cols)]]
        where = ", ".join(columns[:MAX_NAMED]) + (
            f" and {len(columns) - MAX_NAMED} more" if len(columns) > MAX_NAMED else ""
        )
        out.append(
            f"{split}: {len(hit_rows)} scored value(s) of {where} below {100 * NEAR_ZERO:g} % of "
            f"their typical training value (first {targets.index[row]}: {targets.columns[col]} "
            f"{values[row, col]:.4g} against {typical[col]:.4g}); MAPE divides by them, so they "
            "can outweigh every other window in MAPE and in a choice made on it (eval.metric="
            "mape, the default): check for a partial period or an outage, or rank by sMAPE or "
            "MASE (eval.metric)"
        )
    return out


def _origins(index: pd.DatetimeIndex, start: int, stop: int, spec: str, key: str) -> np.ndarray:
    if stop <= start:
        return np.array([], dtype=np.int64)
    if spec == "daily":
        local = index[start:stop]
        midnight = (local.hour == 0) & (local.minute == 0)
        return np.flatnonzero(midnight) + start
    try:
        stride = int(spec)
    except ValueError:
        raise ConfigError(f"data.{key}={spec!r}: use 'daily' or a step count such as '1'") from None
    if stride < 1:
        raise ConfigError(f"data.{key} must be 'daily' or >= 1")
    return np.arange(start, stop, stride)


def _windows(
    name: str, origins: np.ndarray, bad_rows: np.ndarray, L: int, H: int, dropped: dict[str, int]
) -> WindowSet:
    origins = origins.astype(np.int64)
    if bad_rows.any() and len(origins):
        bad_cum = np.concatenate([[0], np.cumsum(bad_rows)])
        bad = bad_cum[origins + H] - bad_cum[origins - L] > 0
        if bad.any():
            dropped[name] = int(bad.sum())
            origins = origins[~bad]
    return WindowSet(name, origins)
