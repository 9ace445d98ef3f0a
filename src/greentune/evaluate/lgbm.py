"""LightGBM as a practitioner would build it: one direct multi-horizon model over (origin, step).

Each row is one forecast origin ``o`` and horizon step ``h`` (target time ``t = o + h``), with
what is known at the origin:

- the step ``h`` itself and the last value ``y[o-1]``;
- the same clock time on each of the 7 latest days before the origin (``y[t - k*day]``,
  k >= ceil((h+1)/day)) and in the latest week; the known covariates at those times too, so the
  trees can read "yesterday's load at yesterday's temperature";
- rolling statistics of the last day and week (mean, std, min, max);
- calendar (minute of day, day of week, day of year) and the known covariates at ``t``;
- past covariates at ``o - 1``.

Tuned on validation, never on test, in four fits with early stopping on the validation rows:
trees of 63 leaves against 15 leaves with at least 50 rows each (the smaller trees won on a few
months of data), then, with the better size, the value itself against its ratio to the last
day's mean at the origin (trees cannot extrapolate a level that moved) and against the
per-timestamp design greentune used before (one row per time, whole-day lags >= the horizon:
more rows, no origin features); the lowest validation MAE over the same validation (origin,
step) pairs is kept. Quantiles are the kept model's point plus empirical residual quantiles per
horizon step on the validation windows at the test origins' clock times (the rows also used for
early stopping: a slightly optimistic calibration, as for the `linear` baseline).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from greentune.data.windows import ForecastData
from greentune.errors import DataError
from greentune.evaluate.baselines import (
    BASELINES,
    BaselineOptions,
    calibration_origins,
    horizon_positions,
    residual_quantiles,
    steps_per,
)
from greentune.results import Forecast

LGBM_ROUNDS = 2000  # at most; early stopping on validation rows ends far sooner
LGBM_PARAMS: dict[str, object] = {
    "learning_rate": 0.05,
    "num_leaves": 63,
    "min_child_samples": 20,
    "subsample": 0.8,
    "subsample_freq": 1,  # bagging is off unless a frequency is set
    "colsample_bytree": 0.8,
    "verbose": -1,
    "seed": 0,
    "deterministic": True,
    "force_row_wise": True,  # with deterministic=True: identical trees run to run
}
EARLY_STOPPING_ROUNDS = 50
# Threads: 2, but 1 below 50k rows, where per-tree work is tiny and OpenMP barriers dominate; with
# the cores busy elsewhere, 2 threads on 840 rows took 100 s against 0.14 s for 1.
LGBM_THREADS, LGBM_THREADED_ROWS = 2, 50_000
# (origin, step) rows per fit at most: the training origins are strided to stay under it (3
# years of half-hours would otherwise give 2.4 M rows).
MAX_TRAIN_ROWS = 200_000
DAY_LAGS = 7
SIZES: tuple[dict[str, object], ...] = ({}, {"num_leaves": 15, "min_child_samples": 50})


@dataclass
class _Rows:
    x: np.ndarray
    """(origins * H, F) features."""
    scale: np.ndarray
    """(origins * H,) the ratio target's divisor: the last day's mean at the origin (with
    fallbacks known at the origin where it is missing)."""


def _shift(values: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """values[pos] with NaN where pos falls before the series."""
    out = np.full(pos.shape, np.nan)
    ok = pos >= 0
    out[ok] = values[pos[ok]]
    return out


def _rolling(y: np.ndarray, width: int) -> dict[str, np.ndarray]:
    """Statistics of y[i - width : i] at each position i (NaN before a full window)."""
    n = len(y)
    out = {k: np.full(n + 1, np.nan) for k in ("mean", "std", "min", "max")}
    if n < width:
        return out
    from numpy.lib.stride_tricks import sliding_window_view

    win = sliding_window_view(y, width)  # win[j] = y[j : j + width], known at position j + width
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows give NaN, as wanted
        out["mean"][width:] = np.nanmean(win, axis=1)
        out["std"][width:] = np.nanstd(win, axis=1)
        out["min"][width:] = np.nanmin(win, axis=1)
        out["max"][width:] = np.nanmax(win, axis=1)
    return out


def _rolling_of(
    data: ForecastData, target: int, y: np.ndarray, width: int
) -> dict[str, np.ndarray]:
    """``_rolling`` of target ``target``, once per data: every call of ``origin_rows`` reads the
    whole series' statistics (tuning, validation, calibration at each clock time)."""
    key = f"lgbm-rolling@{target}@{width}"
    if key not in data.cache:
        data.cache[key] = _rolling(y, width)
    stats: dict[str, np.ndarray] = data.cache[key]
    return stats


def origin_rows(data: ForecastData, target: int, origins: np.ndarray) -> _Rows:
    """Features of every (origin, step) pair, origin-major: row i * H + h."""
    frame, H = data.frame, data.horizon
    day, week = steps_per(data, "1D"), steps_per(data, "7D")
    y = frame[data.target_cols[target]].to_numpy(dtype=float)
    o = np.repeat(origins, H)
    h = np.tile(np.arange(H), len(origins))
    t = o + h
    first = day * ((h + day) // day)  # the latest same-clock-time lag known at the origin
    cols: dict[str, np.ndarray] = {"h": h.astype(float), "last": _shift(y, o - 1)}
    for k in range(DAY_LAGS):
        cols[f"day_lag_{k}"] = _shift(y, t - first - k * day)
    cols["week_lag"] = _shift(y, t - week * ((h + week) // week))
    roll_day, roll_week = _rolling_of(data, target, y, day), _rolling_of(data, target, y, week)
    for name, values in roll_day.items():
        cols[f"day_{name}"] = values[o]
    cols["week_mean"] = roll_week["mean"][o]
    idx = frame.index
    cols["minute_of_day"] = np.asarray(idx.hour * 60 + idx.minute, dtype=float)[t]
    cols["day_of_week"] = np.asarray(idx.day_of_week, dtype=float)[t]
    cols["day_of_year"] = np.asarray(idx.day_of_year, dtype=float)[t]
    for c in data.known_cols:
        if c.startswith("cal_"):
            continue
        v = frame[c].to_numpy(dtype=float)
        cols[c] = v[t]
        cols[f"{c}_day_lag"] = _shift(v, t - first)
    for c in data.past_cols:
        cols[f"{c}_last"] = _shift(frame[c].to_numpy(dtype=float), o - 1)
    # the last day's mean, else the last week's, else the last value, else the training mean:
    # each known at the origin, so every pair gets a finite divisor and every design is scored
    # on the same validation pairs
    mean = float(data.scaler.mean[target])
    scale = np.full(len(o), mean if abs(mean) > 1e-9 else 1.0)
    for fallback in (cols["last"], cols["week_mean"], cols["day_mean"]):
        scale = np.where(np.isfinite(fallback) & (np.abs(fallback) > 1e-9), fallback, scale)
    return _Rows(np.column_stack(list(cols.values())), scale)


class Booster:
    """A trained LightGBM model, called on feature rows; saved and loaded as LightGBM's own
    text format (what a hybrid run keeps beside its network)."""

    def __init__(self, booster: Any, iterations: int | None = None) -> None:
        self.booster = booster
        self.iterations = iterations

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(rows, num_iteration=self.iterations))

    def to_string(self) -> str:
        return str(self.booster.model_to_string(num_iteration=self.iterations))

    @classmethod
    def from_string(cls, text: str) -> Booster:
        import lightgbm as lgb

        return cls(lgb.Booster(model_str=text))


def _fit(
    x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, size: dict[str, object]
) -> Booster:
    import lightgbm as lgb  # imported here: only this baseline needs it

    params = dict(LGBM_PARAMS, objective="regression", **size)
    params["n_jobs"] = 1 if len(y) < LGBM_THREADED_ROWS else LGBM_THREADS
    train = lgb.Dataset(x, y, free_raw_data=False)
    booster = lgb.train(
        params,
        train,
        num_boost_round=LGBM_ROUNDS,
        valid_sets=[lgb.Dataset(xv, yv, reference=train)],
        callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
    )
    return Booster(booster, booster.best_iteration)


def train_origins(data: ForecastData, end: int | None = None) -> np.ndarray:
    """Origins whose whole horizon lies in the training rows (before row ``end``: default the
    validation rows), after a week of history, strided to at most MAX_TRAIN_ROWS rows."""
    week, H = steps_per(data, "7D"), data.horizon
    end = data.val_start if end is None else end
    first = min(week, max(1, end - H - 1))
    cand = np.arange(first, end - H + 1)
    stride = max(1, -(-len(cand) * H // MAX_TRAIN_ROWS))
    return cand[::stride]


def timestamp_features(data: ForecastData, target: int, t: np.ndarray) -> np.ndarray:
    """The per-timestamp design (greentune's LightGBM before issue 17): at each target time,
    DAY_LAGS consecutive whole-day lags, the first the smallest one >= the horizon (known at
    any origin that forecasts ``t``), their mean, calendar and known covariates."""
    frame = data.frame
    day = steps_per(data, "1D")
    y = frame[data.target_cols[target]].to_numpy(dtype=float)
    lags = day * (-(-data.horizon // day) + np.arange(DAY_LAGS))
    cols = [_shift(y, t - lag) for lag in lags]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cols.append(np.nanmean(np.stack(cols), axis=0))
    idx = frame.index
    cols.append(np.asarray(idx.hour * 60 + idx.minute, dtype=float)[t])
    cols.append(np.asarray(idx.day_of_week, dtype=float)[t])
    cols.append(np.asarray(idx.day_of_year, dtype=float)[t])
    cols += [frame[c].to_numpy(dtype=float)[t] for c in data.known_cols if not c.startswith("cal_")]
    return np.column_stack(cols)


@dataclass
class LgbmFit:
    """The kept model of one target: its design and tree size, predict, validation MAE."""

    form: str
    """'level' (the value), 'ratio' (to the last day's mean at the origin), both on
    (origin, step) rows; or 'timestamp' (one row per time, lags of whole days >= horizon)."""
    size: dict[str, object]
    predict: Booster
    val_mae: float


def tried(data: ForecastData, target: int) -> list[LgbmFit]:
    """Every candidate of ``target``, the kept one (lowest validation MAE) first; cached on the
    data, so the test and validation forecasts, a hybrid's base and the ensembles share one
    tuning."""
    key = f"lightgbm/{target}"
    if key not in data.cache:
        every = candidates(data, target)
        kept = min(every, key=lambda f: f.val_mae)
        data.cache[key] = [kept, *[f for f in every if f is not kept]]
    fits: list[LgbmFit] = data.cache[key]
    return fits


def kept_fit(data: ForecastData, target: int) -> LgbmFit:
    """The candidate the ``lightgbm`` row forecasts with (cached, see ``tried``)."""
    return tried(data, target)[0]


def candidates(data: ForecastData, target: int) -> list[LgbmFit]:
    """Both tree sizes on the value; then, at the better size, the ratio form and the
    per-timestamp design; each scored by MAE on the same validation (origin, step) pairs."""
    sized = [f for f in (fit_design(data, target, "level", size) for size in SIZES) if f]
    if not sized:
        raise DataError(
            f"{data.report.origin}: no finite training or validation value of "
            f"{data.target_cols[target]} for the lightgbm baseline"
        )
    size = min(sized, key=lambda f: f.val_mae).size
    more = (fit_design(data, target, form, size) for form in ("ratio", "timestamp"))
    return [*sized, *[f for f in more if f]]


def fit_design(
    data: ForecastData,
    target: int,
    form: str,
    size: dict[str, object],
    origins: np.ndarray | None = None,
) -> LgbmFit | None:
    """One design fitted on the training ``origins`` (default: all of ``train_origins``; the
    per-timestamp design takes the times their horizons cover), early-stopped and scored on
    the validation pairs; None when a split has no finite target."""
    H = data.horizon
    tr = train_origins(data) if origins is None else origins
    va = data.val.origins
    y = data.frame[data.target_cols[target]].to_numpy(dtype=float)
    pos_v = horizon_positions(va, H).ravel()
    yv = y[pos_v]
    if form == "timestamp":
        times = None if origins is None else np.unique(horizon_positions(origins, H))
        return _fit_timestamps(data, target, y, pos_v, size, times)
    rows_t, rows_v = origin_rows(data, target, tr), origin_rows(data, target, va)
    yt = y[horizon_positions(tr, H).ravel()]
    st, sv = (rows_t.scale, rows_v.scale) if form == "ratio" else (1.0, 1.0)
    zt, zv = yt / st, yv / sv
    ok_t, ok_v = np.isfinite(zt), np.isfinite(zv)
    if ok_t.sum() == 0 or ok_v.sum() == 0:
        return None
    predict = _fit(rows_t.x[ok_t], zt[ok_t], rows_v.x[ok_v], zv[ok_v], size)
    mae = float(np.nanmean(np.abs(predict(rows_v.x) * sv - yv)))
    return LgbmFit(form, size, predict, mae)


def refit_design(data: ForecastData, target: int, fit: LgbmFit) -> LgbmFit:
    """``fit``'s design, tree size and boosting rounds (its early-stopped best iteration),
    chosen on validation already, fitted again on the rows before the test rows (training and
    validation), without early stopping."""
    import lightgbm as lgb

    H = data.horizon
    y = data.frame[data.target_cols[target]].to_numpy(dtype=float)
    if fit.form == "timestamp":
        first = int(steps_per(data, "1D") * (-(-H // steps_per(data, "1D")) + DAY_LAGS))
        rows = np.arange(first, data.test_start)
        rows = rows[np.isfinite(y[rows])]
        x, z = timestamp_features(data, target, rows), y[rows]
    else:
        origins = train_origins(data, data.test_start)
        built = origin_rows(data, target, origins)
        z = y[horizon_positions(origins, H).ravel()]
        z = z / built.scale if fit.form == "ratio" else z
        ok = np.isfinite(z)
        x, z = built.x[ok], z[ok]
    params = dict(LGBM_PARAMS, objective="regression", **fit.size)
    params["n_jobs"] = 1 if len(z) < LGBM_THREADED_ROWS else LGBM_THREADS
    rounds = fit.predict.iterations or int(fit.predict.booster.current_iteration())
    booster = lgb.train(params, lgb.Dataset(x, z), num_boost_round=max(1, rounds))
    return LgbmFit(fit.form, fit.size, Booster(booster), fit.val_mae)


def _fit_timestamps(
    data: ForecastData,
    target: int,
    y: np.ndarray,
    pos_v: np.ndarray,
    size: dict[str, object],
    times: np.ndarray | None = None,
) -> LgbmFit | None:
    rows = np.arange(len(y)) if times is None else times
    first = int(steps_per(data, "1D") * (-(-data.horizon // steps_per(data, "1D")) + DAY_LAGS))
    tr = rows[(rows >= first) & (rows < data.val_start) & np.isfinite(y[rows])]
    every = np.arange(len(y))
    va = every[(every >= data.val_start) & (every < data.test_start) & np.isfinite(y)]
    if len(tr) == 0 or len(va) == 0:
        return None
    x_tr, x_va = timestamp_features(data, target, tr), timestamp_features(data, target, va)
    predict = _fit(x_tr, y[tr], x_va, y[va], size)
    mae = float(np.nanmean(np.abs(predict(timestamp_features(data, target, pos_v)) - y[pos_v])))
    return LgbmFit("timestamp", size, predict, mae)


def out_of_fold(
    data: ForecastData, target: int, fit: LgbmFit, origins: np.ndarray, folds: int = 2
) -> np.ndarray:
    """(origins, H) forecasts of training ``origins``, each by the kept design refitted
    without the block of training origins it falls in (nor the horizon on either side, so no
    target it forecasts was a training target): what a model stacked on LightGBM must learn
    from, since LightGBM's in-sample forecasts are better than it will ever be on new data.
    A block whose refit has no training row left (a very short series) is forecast by the
    full fit, in sample."""
    H = data.horizon
    pool = train_origins(data)
    out = np.empty((len(origins), H))
    edges = np.linspace(origins.min(), origins.max() + 1, folds + 1)
    for k in range(folds):
        lo, hi = edges[k], edges[k + 1]
        mine = (origins >= lo) & (origins < hi)
        if not mine.any():
            continue
        keep = pool[(pool + H <= lo) | (pool >= hi + H)]
        refit = fit_design(data, target, fit.form, fit.size, keep) if len(keep) else None
        out[mine] = predict_target(data, target, refit or fit, origins[mine])
    return out


def predict_target(
    data: ForecastData, target: int, fit: LgbmFit, origins: np.ndarray
) -> np.ndarray:
    """(origins, H) forecasts of target ``target`` in data units."""
    if fit.form == "timestamp":
        t = horizon_positions(origins, data.horizon).ravel()
        return fit.predict(timestamp_features(data, target, t)).reshape(len(origins), data.horizon)
    rows = origin_rows(data, target, origins)
    out = fit.predict(rows.x)
    if fit.form == "ratio":
        out = out * rows.scale
    return out.reshape(len(origins), data.horizon)


def history_rows(fit: LgbmFit, day: int, horizon: int) -> int:
    """Rows before a forecast origin that ``fit``'s features read: a week (the lags of the
    origin designs and the weekly statistics), or for the per-timestamp design its whole-day
    lags from the first >= the horizon (8 days at a two-day horizon)."""
    if fit.form == "timestamp":
        return day * (-(-horizon // day) + DAY_LAGS - 1)
    return day * DAY_LAGS


def lgbm_point(data: ForecastData, fits: list[LgbmFit], origins: np.ndarray) -> np.ndarray:
    """(N, H, T): target j forecast by ``fits[j]``, in data units."""
    return np.stack([predict_target(data, j, f, origins) for j, f in enumerate(fits)], axis=-1)


def design_fit(data: ForecastData, target: int, label: str) -> LgbmFit:
    """The fit of design ``label`` (``design_label``) that tuning tried for ``target``, else
    the kept one (a target that kept that design, or did not try it)."""
    fits = tried(data, target)
    return next((f for f in fits if design_label(f) == label), fits[0])


@BASELINES.register("lightgbm")
def lightgbm(
    data: ForecastData, origins: np.ndarray, quantiles: tuple[float, ...], _: BaselineOptions
) -> Forecast:
    """Direct multi-horizon LightGBM per target, design chosen on validation."""
    return forecast_with(data, origins, quantiles, kept_fit)


def design_label(fit: LgbmFit) -> str:
    """``<form>-<leaves>``, e.g. ``timestamp-15``: how a design is named as an ensemble member."""
    return f"{fit.form}-{fit.size.get('num_leaves', LGBM_PARAMS['num_leaves'])}"


def design_forecasts(
    data: ForecastData, origins: np.ndarray, quantiles: tuple[float, ...]
) -> dict[str, Forecast]:
    """The forecast of each design tried while tuning and not kept (``tried``), by
    ``design_label``; a target that kept that design, or did not try it, forecasts with its
    kept one there. No fit of its own: the designs were fitted to choose one, in the
    ``lightgbm`` row's window."""
    labels = list(
        dict.fromkeys(design_label(f) for j in range(data.n_targets) for f in tried(data, j)[1:])
    )

    def pick(label: str) -> Callable[[ForecastData, int], LgbmFit]:
        def fit(d: ForecastData, j: int) -> LgbmFit:
            return design_fit(d, j, label)

        return fit

    return {label: forecast_with(data, origins, quantiles, pick(label)) for label in labels}


def forecast_with(
    data: ForecastData,
    origins: np.ndarray,
    quantiles: tuple[float, ...],
    pick: Callable[[ForecastData, int], LgbmFit],
) -> Forecast:
    """Each target forecast by the fit ``pick`` gives it; quantiles from that fit's residuals
    per horizon step on the validation windows at the origins' clock times."""
    H, T = data.horizon, data.n_targets
    point = np.empty((len(origins), H, T))
    resid = []
    fit_s = predict_s = 0.0
    cal = (
        calibration_origins(data, data.val_start, data.test_start - H + 1, origins)
        if quantiles
        else None
    )
    y = data.target_values()
    for j in range(T):
        t0 = time.perf_counter()
        fit = pick(data, j)
        if cal is not None:
            resid.append(y[horizon_positions(cal, H), j] - predict_target(data, j, fit, cal))
        t1 = time.perf_counter()
        point[..., j] = predict_target(data, j, fit, origins)
        fit_s += t1 - t0
        predict_s += time.perf_counter() - t1
    q = None
    if quantiles:
        q = residual_quantiles(point, np.stack(resid, axis=-1), quantiles)
    return Forecast(point, q, fit_s=fit_s, predict_s=predict_s)
