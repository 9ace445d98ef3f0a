"""Baselines scored on the same test windows as the network: seasonal naive, ridge (and
LightGBM, in ``greentune.evaluate.lgbm``).

A baseline is a function ``(data, origins, quantiles, options) -> Forecast``. It fits on training
rows (positions < ``data.val_start``) only; validation rows may pick hyperparameters, stop boosting
early or calibrate quantiles. Test targets are read only as history before a forecast origin,
exactly as the network sees them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from greentune.config import RunConfig
from greentune.data.windows import ForecastData, unfold_targets
from greentune.errors import DataError
from greentune.evaluate.ridge import (
    LinearFit,
    clock_minutes,
    clock_origins,
    complete_origins,
    design_matrix,
    fit_linear,
    fit_linear_at,
)
from greentune.registry import Registry
from greentune.results import Forecast


@dataclass(frozen=True)
class BaselineOptions:
    """What a run's config says to the baselines that take settings (the peers)."""

    seed: int = 0
    """Seed of the baselines that draw random numbers (the neural peers, mlforecast)."""
    peer_max_steps: int = 1000
    """Training steps at most for the neural peers, early-stopped on validation."""


def baseline_options(cfg: RunConfig) -> BaselineOptions:
    return BaselineOptions(seed=cfg.seed, peer_max_steps=cfg.eval.peer_max_steps)


Baseline = Callable[[ForecastData, np.ndarray, tuple[float, ...], BaselineOptions], Forecast]
BASELINES: Registry[Baseline] = Registry("baseline")

# Fewer phase-matched calibration windows than this and quantiles pool all clock times instead.
MIN_CALIBRATION = 20


def run_baseline(
    name: str,
    data: ForecastData,
    origins: np.ndarray,
    quantiles: tuple[float, ...] = (),
    options: BaselineOptions | None = None,
) -> Forecast:
    """Run the baseline ``name`` on ``origins``; fit_s/predict_s hold the wall seconds."""
    fn = BASELINES.get(name)
    origins = np.asarray(origins, dtype=np.int64)
    start = time.perf_counter()
    forecast = fn(data, origins, tuple(float(q) for q in quantiles), options or BaselineOptions())
    if forecast.fit_s == 0.0 and forecast.predict_s == 0.0:
        forecast.predict_s = time.perf_counter() - start
    expected = (len(origins), data.horizon, data.n_targets)
    if forecast.point.shape != expected:  # pragma: no cover - a baseline bug
        raise RuntimeError(f"baseline {name} returned {forecast.point.shape}, not {expected}")
    return forecast


def steps_per(data: ForecastData, period: str) -> int:
    """Steps of the (regular) index in ``period``, e.g. 48 per '1D' for half-hourly data."""
    step = data.frame.index[1] - data.frame.index[0]
    return max(1, round(pd.Timedelta(period) / step))


def seasonal_lags(horizon: int, m: int) -> np.ndarray:
    """Lag per horizon step h: m * ceil((h + 1) / m), the last same-phase step before the origin."""
    return m * ((np.arange(horizon) + m) // m)


def horizon_positions(origins: np.ndarray, horizon: int) -> np.ndarray:
    return origins[:, None] + np.arange(horizon)


def calibration_origins(data: ForecastData, lo: int, hi: int, origins: np.ndarray) -> np.ndarray:
    """Positions in [lo, hi) at the local clock times of ``origins``.

    Daily origins all start at midnight, so horizon step h is always the same clock time; matching
    the phase lets per-step residual quantiles reflect that time's spread (night load is calmer).
    """
    cand = np.arange(max(lo, 0), hi)
    if len(cand) == 0:
        raise DataError(
            f"{data.report.origin}: no rows to calibrate baseline quantiles in [{lo}, {hi}); "
            "use more data or ask for no quantiles"
        )
    idx = data.frame.index
    tod = np.asarray(idx.hour * 60 + idx.minute)
    matched = cand[np.isin(tod[cand], np.unique(tod[origins]))]
    return matched if len(matched) >= MIN_CALIBRATION else cand


def residual_quantiles(
    point: np.ndarray, residuals: np.ndarray, quantiles: tuple[float, ...]
) -> dict[float, np.ndarray] | None:
    """Point forecast plus empirical residual quantiles per horizon step and target."""
    if not quantiles:
        return None
    offsets = np.nanquantile(residuals, quantiles, axis=0)  # (Q, H, T)
    return {q: point + offsets[i][None] for i, q in enumerate(quantiles)}


# ----------------------------------------------------------------------------- seasonal naive

FITTED_ON_NOTHING = ("seasonal_naive_daily", "seasonal_naive_weekly")
"""Baselines that read only each test window's own history: no training data to protect."""


def seasonal_point(data: ForecastData, origins: np.ndarray, m: int) -> np.ndarray:
    """(N, H, T): each step's value one season of ``m`` steps (or several) before it, the
    latest known at the origin."""
    lags = seasonal_lags(data.horizon, m)
    if len(origins) and origins.min() < lags.max():
        raise DataError(
            f"{data.report.origin}: the seasonal naive with period {m} needs {lags.max()} rows "
            f"of history before the forecast; there are {origins.min()}. Give a longer history"
        )
    return data.target_values()[horizon_positions(origins, data.horizon) - lags]


def _seasonal_naive(
    data: ForecastData, origins: np.ndarray, quantiles: tuple[float, ...], m: int
) -> Forecast:
    t0 = time.perf_counter()
    y, horizon = data.target_values(), data.horizon
    lags = seasonal_lags(horizon, m)
    point = seasonal_point(data, origins, m)
    t1 = time.perf_counter()
    q = None
    if quantiles:
        cal = calibration_origins(data, int(lags.max()), data.val_start - horizon + 1, origins)
        pos = horizon_positions(cal, horizon)
        q = residual_quantiles(point, y[pos] - y[pos - lags], quantiles)
    return Forecast(point, q, fit_s=time.perf_counter() - t1, predict_s=t1 - t0)


@BASELINES.register("seasonal_naive_daily")
def seasonal_naive_daily(
    data: ForecastData, origins: np.ndarray, quantiles: tuple[float, ...], _: BaselineOptions
) -> Forecast:
    """Same clock time on the latest day before the origin."""
    return _seasonal_naive(data, origins, quantiles, steps_per(data, "1D"))


@BASELINES.register("seasonal_naive_weekly")
def seasonal_naive_weekly(
    data: ForecastData, origins: np.ndarray, quantiles: tuple[float, ...], _: BaselineOptions
) -> Forecast:
    """Same clock time and weekday in the latest week before the origin."""
    return _seasonal_naive(data, origins, quantiles, steps_per(data, "7D"))


# ----------------------------------------------------------------------------- linear (ridge)


def ridge_point(data: ForecastData, fit: LinearFit, origins: np.ndarray) -> np.ndarray:
    """(N, H, T) forecasts of one ridge in data units."""
    x, _ = design_matrix(data, origins)
    scaled = fit.predict_scaled(x)
    if data.channel_independent:
        return data.unscale_target(unfold_targets(scaled, data.n_targets))
    return data.unscale_target(scaled.reshape(len(origins), data.horizon, data.n_targets))


def clock_point(
    data: ForecastData, fits: Mapping[int, LinearFit], origins: np.ndarray
) -> np.ndarray:
    """(N, H, T): each origin forecast by the ridge of its local clock time (``fits`` by
    minute of the day, ``linear_clock``)."""
    out = np.empty((len(origins), data.horizon, data.n_targets))
    at = clock_minutes(data, origins)
    for m in np.unique(at):
        if int(m) not in fits:
            kept = ", ".join(f"{k // 60:02d}:{k % 60:02d}" for k in sorted(fits))
            raise DataError(
                f"{data.report.origin}: linear_clock has a ridge for forecasts issued at {kept} "
                f"only, not {m // 60:02d}:{m % 60:02d}; end the history just before one of "
                "those times"
            )
        mine = at == m
        out[mine] = ridge_point(data, fits[int(m)], origins[mine])
    return out


@BASELINES.register("linear")
def linear(
    data: ForecastData, origins: np.ndarray, quantiles: tuple[float, ...], _: BaselineOptions
) -> Forecast:
    """DLinear-like direct multi-output ridge from the network's inputs to all H*T outputs."""
    L, H, T = data.context_length, data.horizon, data.n_targets
    fit = fit_linear(data)
    t0 = time.perf_counter()

    def predict(o: np.ndarray) -> np.ndarray:
        return ridge_point(data, fit, o)

    q = None
    if quantiles:
        lo, hi = max(data.val_start, L), data.test_start - H + 1
        cal = complete_origins(data, calibration_origins(data, lo, hi, origins))
        resid = data.target_values()[horizon_positions(cal, H)] - predict(cal)
        q = residual_quantiles(np.zeros((1, H, T)), resid, quantiles)  # offsets, point added below
    t1 = time.perf_counter()
    point = predict(origins)
    if q is not None:
        q = {k: point + v for k, v in q.items()}
    # the ridge fit's own seconds count even when the skip path computed it first
    fit_s = fit.fit_s + (t1 - t0)
    return Forecast(point, q, fit_s=fit_s, predict_s=time.perf_counter() - t1)


def left_out(name: str, data: ForecastData) -> str | None:
    """Why baseline ``name`` does not apply to this data (the run logs it and leaves the row
    out), or None: the baseline's check in ``APPLIES``, where it has one."""
    check = APPLIES.get(name)
    return check(data) if check else None


def _clock_left_out(data: ForecastData) -> str | None:
    """``linear_clock`` is a default: it leaves out data where it would repeat ``linear``, or
    find a clock time it forecasts without windows."""
    if data.step >= pd.Timedelta(days=1):
        return f"every origin is at the same clock time with {data.step} steps: it would be linear"
    origins = np.concatenate([data.test.origins, data.val.origins])
    for minute in np.unique(clock_minutes(data, origins)):
        try:  # every clock time it would forecast, test and validation (the ensembles' choice)
            clock_origins(data, int(minute))
        except DataError as exc:
            return str(exc)
    return None


APPLIES: dict[str, Callable[[ForecastData], str | None]] = {"linear_clock": _clock_left_out}
"""Per baseline, why it does not apply to some data (None: it does)."""


@BASELINES.register("linear_clock")
def linear_clock(
    data: ForecastData, origins: np.ndarray, quantiles: tuple[float, ...], _: BaselineOptions
) -> Forecast:
    """One ridge per clock time of the forecast origin (``fit_linear_at``): each origin is
    forecast by the ridge fitted on the training windows issued at its own time of day, so a
    run with daily origins trains one ridge, validation every 3 hours eight. The `linear`
    baseline is one ridge over windows from every clock time. On channel-independent data each
    clock time's ridge is shared by the targets, each reading its own history, as ``linear``'s."""
    L, H, T = data.context_length, data.horizon, data.n_targets
    cal = np.zeros(0, dtype=np.int64)
    if quantiles:
        lo, hi = max(data.val_start, L), data.test_start - H + 1
        cal = complete_origins(data, calibration_origins(data, lo, hi, origins))
        # at the origins' own clock times only (one ridge each), even when they are few
        own = np.isin(clock_minutes(data, cal), clock_minutes(data, origins))
        cal = cal[own] if own.any() else cal
    minutes = np.unique(clock_minutes(data, np.concatenate([origins, cal])))
    fits = {int(m): fit_linear_at(data, int(m)) for m in minutes}
    t0 = time.perf_counter()

    def predict(o: np.ndarray) -> np.ndarray:
        return clock_point(data, fits, o)

    q = None
    if quantiles:
        resid = data.target_values()[horizon_positions(cal, H)] - predict(cal)
        q = residual_quantiles(np.zeros((1, H, T)), resid, quantiles)
    t1 = time.perf_counter()
    point = predict(origins)
    if q is not None:
        q = {k: point + v for k, v in q.items()}
    # each fit's own seconds count, also when an earlier call made it (they are cached)
    fit_s = sum(f.fit_s for f in fits.values()) + (t1 - t0)
    return Forecast(point, q, fit_s=fit_s, predict_s=time.perf_counter() - t1)
