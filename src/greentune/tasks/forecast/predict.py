"""From network output to forecasts in data units, their scores and their rows on disk."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from greentune.config import RunConfig
from greentune.data.windows import ForecastData
from greentune.distributed import ranks
from greentune.errors import ConfigError, DataError
from greentune.evaluate.metrics import forecast_metrics, mase_scale
from greentune.results import Forecast, Quality
from greentune.tasks.base import mean_loss
from greentune.tasks.forecast.batches import ForecastBatches, stack_windows

QUALITY = Quality("mape", higher_is_better=False, skill_reference="seasonal_naive_weekly")
"""What ranks forecasters by default: test (or validation) MAPE, skill against the weekly
naive."""


SCORES = ("mape", "smape", "mase", "mae", "rmse")
"""What ``eval.metric`` may name for a forecast (every one lower-is-better)."""


def quality_for(cfg: RunConfig) -> Quality:
    """The run's ranking score: ``eval.metric`` (unset: MAPE)."""
    metric = cfg.eval.metric or QUALITY.metric
    if metric not in SCORES:
        raise ConfigError(
            f"eval.metric={metric} ranks classifiers; a forecast ranks by one of "
            f"{', '.join(SCORES)}"
        )
    return dataclasses.replace(QUALITY, metric=metric)


@torch.no_grad()
def predict_scaled(model: Any, batches: ForecastBatches, batch_size: int) -> np.ndarray:
    """Network output (N, H, T, Q) for every window; with several processes each predicts its
    shard and the shards are gathered, every window exactly once."""
    model.eval()
    mine = ranks.shard(len(batches))
    outs = [
        model(batches.get(mine[start : start + batch_size])).float().numpy()
        for start in range(0, len(mine), batch_size)
    ]
    spec = model.spec
    empty = np.zeros((0, spec.horizon, spec.n_targets, spec.n_quantiles), dtype=np.float32)
    out = ranks.gather_shards(np.concatenate(outs) if outs else empty, len(batches))
    return np.sort(out, axis=-1)  # quantiles must not cross


@torch.no_grad()
def predict_stacked(model: Any, parts: list[ForecastBatches], batch_size: int) -> np.ndarray:
    """Network output (N, H, T, Q) for the windows of several inputs (each with its own
    scaling and prompts) in passes of ``batch_size`` windows, in order; one process."""
    model.eval()
    flat = [(p, i) for p in parts for i in range(len(p))]
    outs = []
    for start in range(0, len(flat), batch_size):
        chunk = flat[start : start + batch_size]
        outs.append(model(stack_windows(chunk)).float().numpy())
    return np.sort(np.concatenate(outs), axis=-1)


def validation_scores(
    model: Any,
    batches: ForecastBatches,
    batch_size: int,
    data: ForecastData,
    quantiles: tuple[float, ...],
) -> dict[str, float]:
    """Validation loss and MAPE (``train.select_on: mape``): the MAPE of the point forecast
    (the median where quantiles are forecast) in data units on the validation windows, as the
    run's validation table scores it. The loss takes one pass and the forecasts another (a
    network whose loss falls while its MAPE rises, as the LightGBM hybrid did, is then kept
    at the better MAPE)."""
    loss = mean_loss(model, batches, batch_size)
    fc = to_forecast(data, predict_scaled(model, batches, batch_size), quantiles)
    mape = float(evaluate_forecast(data, data.val.origins, fc, 1)["mape"])
    if not math.isfinite(mape):  # NaN never improves: the start would be kept without a word
        raise DataError(
            "train.select_on=mape: the validation MAPE is not a number (every validation "
            "target is zero, or a forecast is NaN); set train.select_on=loss"
        )
    return {"val_loss": loss, "val_mape": mape}


def validator(
    select_on: str,
    model: Any,
    batches: ForecastBatches,
    batch_size: int,
    data: ForecastData,
    quantiles: tuple[float, ...],
) -> Callable[[], float | dict[str, float]]:
    """The training loop's ``validate`` for ``train.select_on``: the loss alone (one pass), or
    the loss and the MAPE (``validation_scores``)."""
    if select_on == "loss":
        return lambda: mean_loss(model, batches, batch_size)
    return lambda: validation_scores(model, batches, batch_size, data, quantiles)


def to_forecast(data: ForecastData, out: np.ndarray, quantiles: tuple[float, ...]) -> Forecast:
    """(N, H, T, Q) scaled network output -> point + quantiles in data units."""
    unscaled = data.unscale_target(np.moveaxis(out, -1, 0))  # (Q, N, H, T)
    if not quantiles:
        return Forecast(point=unscaled[0])
    qs = {q: unscaled[i] for i, q in enumerate(quantiles)}
    return Forecast(point=qs[0.5], quantiles=qs)


def evaluate_forecast(
    data: ForecastData, origins: np.ndarray, fc: Forecast, season_length: int
) -> dict[str, float]:
    """Scores of ``fc`` against the targets; MASE is scaled by the training rows' naive error."""
    y = data.target_values()[origins[:, None] + np.arange(data.horizon)]
    scale = mase_scale(data.target_values()[: data.val_start], season_length)
    return forecast_metrics(y, fc.point, scale, fc.quantiles)


def scores_by_target(
    data: ForecastData, rows: pd.DataFrame, season_length: int
) -> dict[str, dict[str, dict[str, float]]] | None:
    """metrics.json's ``by_target``: the scores of each row of ``rows`` (predictions.parquet's
    long format) on each target alone, MASE scaled by that target's own training rows; None
    for one target, whose scores are the table's."""
    if data.n_targets == 1:
        return None
    train = data.target_values()[: data.val_start]
    scale = {str(c): mase_scale(train[:, j], season_length) for j, c in enumerate(data.target_cols)}
    bands = [c for c in rows.columns if c.startswith("q")]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (model, target), part in rows.groupby(["model", "target"], sort=False, observed=True):
        quantiles = {float(c[1:]): part[c].to_numpy(float) for c in bands if part[c].notna().all()}
        scores = forecast_metrics(
            part["y_true"].to_numpy(float),
            part["y_pred"].to_numpy(float),
            scale[str(target)],
            quantiles or None,
        )
        out.setdefault(str(model), {})[str(target)] = scores
    return out


def season_steps(data: ForecastData, season_length: int | None) -> int:
    """MASE's season in steps: the given one, else one day at the data's frequency."""
    if season_length:
        return season_length
    step = data.frame.index[1] - data.frame.index[0]
    return max(1, int(pd.Timedelta(days=1) / step))


def prediction_rows(
    data: ForecastData, origins: np.ndarray, fc: Forecast, name: str
) -> pd.DataFrame:
    """predictions.parquet's long format: one row per (origin, horizon step, target)."""
    n, h, t = fc.point.shape
    index = data.frame.index
    times = data.horizon_times(origins)
    y = data.target_values()[origins[:, None] + np.arange(h)]
    cols: dict[str, Any] = {
        "model": name,
        "origin": np.repeat(np.asarray(index)[origins], h * t),
        "time": np.repeat(times.reshape(-1), t),
        "step": np.tile(np.repeat(np.arange(1, h + 1), t), n),
        "target": np.tile(np.asarray(data.target_cols, dtype=object), n * h),
        "y_true": y.reshape(-1),
        "y_pred": fc.point.reshape(-1),
    }
    for q, arr in (fc.quantiles or {}).items():
        cols[f"q{q:g}"] = arr.reshape(-1)
    return pd.DataFrame(cols)


def forecast_frame(data: ForecastData, origins: np.ndarray, fc: Forecast) -> pd.DataFrame:
    """What a ``Predictor`` returns: one row per (origin, step) with a column per target and
    quantile (``<target>_forecast``, ``<target>_q0.1``, ...) and ``<target>_actual`` where the
    input held the values."""
    h = data.horizon
    rows = origins[:, None] + np.arange(h)
    out = pd.DataFrame(
        {
            "origin": np.repeat(np.asarray(data.frame.index)[origins], h),
            "time": data.horizon_times(origins).reshape(-1),
            "step": np.tile(np.arange(1, h + 1), len(origins)),
        }
    )
    for j, col in enumerate(data.target_cols):
        out[f"{col}_forecast"] = fc.point[..., j].reshape(-1)
        for q, arr in (fc.quantiles or {}).items():
            out[f"{col}_q{q:g}"] = arr[..., j].reshape(-1)
        actual = data.frame[col].to_numpy()[rows].reshape(-1)
        if not np.isnan(actual).all():
            out[f"{col}_actual"] = actual
    return out
