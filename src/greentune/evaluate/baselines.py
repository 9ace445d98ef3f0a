"""Baselines scored on the same test windows as the network: seasonal naive, ridge (and
LightGBM, in ``greentune.evaluate.lgbm``).

A baseline is a function ``(data, origins, quantiles) -> Forecast``. It fits on training rows
(positions < ``data.val_start``) only; validation rows may pick hyperparameters, stop boosting
early or calibrate quantiles. Test targets are read only as history before a forecast origin,
exactly as the network sees them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import linalg

from greentune.data.windows import ForecastData, fold_channels, unfold_targets
from greentune.errors import DataError
from greentune.registry import Registry
from greentune.results import Forecast

Baseline = Callable[[ForecastData, np.ndarray, tuple[float, ...]], Forecast]
BASELINES: Registry[Baseline] = Registry("baseline")

# Ridge penalties relative to the mean diagonal of X'X, so the grid means the same at any size.
RIDGE_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
# Fewer phase-matched calibration windows than this and quantiles pool all clock times instead.
MIN_CALIBRATION = 20


def run_baseline(
    name: str, data: ForecastData, origins: np.ndarray, quantiles: tuple[float, ...] = ()
) -> Forecast:
    """Run the baseline ``name`` on ``origins``; fit_s/predict_s hold the wall seconds."""
    fn = BASELINES.get(name)
    origins = np.asarray(origins, dtype=np.int64)
    start = time.perf_counter()
    forecast = fn(data, origins, tuple(float(q) for q in quantiles))
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


def _seasonal_naive(
    data: ForecastData, origins: np.ndarray, quantiles: tuple[float, ...], m: int
) -> Forecast:
    t0 = time.perf_counter()
    y, horizon = data.target_values(), data.horizon
    lags = seasonal_lags(horizon, m)
    if len(origins) and origins.min() < lags.max():
        raise DataError(f"seasonal naive with period {m} needs origins >= {lags.max()}")
    point = y[horizon_positions(origins, horizon) - lags]
    t1 = time.perf_counter()
    q = None
    if quantiles:
        cal = calibration_origins(data, int(lags.max()), data.val_start - horizon + 1, origins)
        pos = horizon_positions(cal, horizon)
        q = residual_quantiles(point, y[pos] - y[pos - lags], quantiles)
    return Forecast(point, q, fit_s=time.perf_counter() - t1, predict_s=t1 - t0)


@BASELINES.register("seasonal_naive_daily")
def seasonal_naive_daily(
    data: ForecastData, origins: np.ndarray, quantiles: tuple[float, ...]
) -> Forecast:
    """Same clock time on the latest day before the origin."""
    return _seasonal_naive(data, origins, quantiles, steps_per(data, "1D"))


@BASELINES.register("seasonal_naive_weekly")
def seasonal_naive_weekly(
    data: ForecastData, origins: np.ndarray, quantiles: tuple[float, ...]
) -> Forecast:
    """Same clock time and weekday in the latest week before the origin."""
    return _seasonal_naive(data, origins, quantiles, steps_per(data, "7D"))


# ----------------------------------------------------------------------------- linear (ridge)


def complete_origins(data: ForecastData, origins: np.ndarray) -> np.ndarray:
    """Origins whose context and horizon hold no missing value (``scaled`` has them as zeros)."""
    bad = np.isnan(data.frame.to_numpy(dtype=float)).any(axis=1)
    if not bad.any():
        return origins
    cum = np.concatenate([[0], np.cumsum(bad)])
    return origins[cum[origins + data.horizon] - cum[origins - data.context_length] == 0]


def design_matrix(data: ForecastData, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flattened scaled context + known future (the network's inputs) and flattened scaled y;
    one row per window, or per (window, target) when the data is channel-independent."""
    b = data.batch(origins)
    past, future, y = b["past"], b["future"], b["y"]
    if data.channel_independent:
        past, future, y = fold_channels(past, future, y, data.n_targets)
    n = len(past)
    x = np.concatenate([past.reshape(n, -1), future.reshape(n, -1)], axis=1)
    return x, y.reshape(n, -1)


def _fit_ridge(
    data: ForecastData, origins: np.ndarray, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray, Callable[[float], np.ndarray]]:
    """Centred ridge statistics: x_mean, y_mean and a solver alpha -> coefficients.

    X'X is accumulated over chunks of windows, so the stride-1 design matrix (thousands of
    overlapping windows x L*C + H*K columns) is never held whole.
    """
    chunks = [origins[i : i + chunk] for i in range(0, len(origins), chunk)]
    sx: np.ndarray | float = 0.0
    sy: np.ndarray | float = 0.0
    for c in chunks:  # pass 1: means, so the Gram matrix is centred without cancellation
        x, y = design_matrix(data, c)
        sx, sy = sx + x.sum(0, dtype=np.float64), sy + y.sum(0, dtype=np.float64)
    x_mean, y_mean = np.asarray(sx) / len(origins), np.asarray(sy) / len(origins)
    gram = np.zeros((len(x_mean), len(x_mean)))
    xty = np.zeros((len(x_mean), len(y_mean)))
    for c in chunks:  # pass 2 in float64: float32 products left X'X indefinite at small alpha
        x, y = design_matrix(data, c)
        x = x - x_mean
        gram += x.T @ x
        xty += x.T @ (y - y_mean)
    scale = float(np.mean(np.diag(gram))) or 1.0
    eye = np.eye(len(gram))

    def solve(alpha: float) -> np.ndarray:
        factor = linalg.cho_factor(gram + alpha * scale * eye, check_finite=False)
        return linalg.cho_solve(factor, xty, check_finite=False)

    return x_mean, y_mean, solve


@dataclass
class LinearFit:
    """Ridge from the flattened scaled inputs (past, then future) to the flattened scaled y."""

    weight: np.ndarray
    """(L*C + H*K, H*T)"""
    x_mean: np.ndarray
    y_mean: np.ndarray
    alpha: float
    fit_s: float

    def predict_scaled(self, x: np.ndarray) -> np.ndarray:
        return (x - self.x_mean) @ self.weight + self.y_mean

    def residual_quantiles(
        self, data: ForecastData, origins: np.ndarray, quantiles: tuple[float, ...]
    ) -> np.ndarray:
        """(Q, H*T) quantiles of scaled residuals y - yhat over ``origins``."""
        x, y = design_matrix(data, complete_origins(data, origins))
        return np.quantile(y - self.predict_scaled(x), quantiles, axis=0)


def walk_alphas(val_error: Callable[[int], float]) -> int:
    """The index in RIDGE_ALPHAS to use: walk the log grid from its middle while the
    validation error falls. Each Cholesky of the (L*C + H*K)^2 system costs seconds, and the
    error is unimodal in alpha in practice."""
    best = len(RIDGE_ALPHAS) // 2
    for step in (-1, 1):
        start = best
        while 0 <= best + step < len(RIDGE_ALPHAS) and val_error(best + step) < val_error(best):
            best += step
        if best != start:
            break
    return best


def fit_linear(data: ForecastData) -> LinearFit:
    """Ridge on every training window (stride 1), alpha chosen on the validation windows.

    Cached on ``data``: the network's skip path and the `linear` baseline share one fit.
    """
    cached = data.cache.get("ridge")
    if cached is not None:
        return cached
    t0 = time.perf_counter()
    L, H = data.context_length, data.horizon
    train = complete_origins(data, np.arange(L, data.val_start - H + 1))
    val = complete_origins(data, data.val.origins)
    if len(train) == 0 or len(val) == 0:
        raise DataError(f"{data.report.origin}: no complete train/val window for the linear model")
    xm, ym, solve = _fit_ridge(data, train)
    xv, yv = design_matrix(data, val)
    xv = xv - xm
    fits: dict[int, tuple[float, np.ndarray]] = {}

    def val_error(i: int) -> float:
        # validation MSE in scaled units; validation is not test, so choosing alpha on it is fair
        if i not in fits:
            w_i = solve(RIDGE_ALPHAS[i])
            fits[i] = (float(np.mean((xv @ w_i + ym - yv) ** 2)), w_i)
        return fits[i][0]

    best = walk_alphas(val_error)
    w = fits[best][1] if best in fits else solve(RIDGE_ALPHAS[best])
    fit = LinearFit(w, xm, ym, RIDGE_ALPHAS[best], time.perf_counter() - t0)
    data.cache["ridge"] = fit
    return fit


@BASELINES.register("linear")
def linear(data: ForecastData, origins: np.ndarray, quantiles: tuple[float, ...]) -> Forecast:
    """DLinear-like direct multi-output ridge from the network's inputs to all H*T outputs."""
    L, H, T = data.context_length, data.horizon, data.n_targets
    fit = fit_linear(data)
    t0 = time.perf_counter()

    def predict(o: np.ndarray) -> np.ndarray:
        x, _ = design_matrix(data, o)
        scaled = fit.predict_scaled(x)
        if data.channel_independent:
            return data.unscale_target(unfold_targets(scaled, T))
        return data.unscale_target(scaled.reshape(len(o), H, T))

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
