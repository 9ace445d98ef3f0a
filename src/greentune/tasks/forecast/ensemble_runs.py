"""``greentune ensemble``: one forecaster made of models from several finished runs.

A member is a row of a forecasting run (its network by default, or ``RUN:ROW`` for any row:
``lightgbm``, ``linear``, an ensemble of that run). The members must have forecast the same data
with the same windows; their saved forecasts are combined, nothing is retrained:

- the weights (per horizon step, convex, NNLS) are fitted on the members' validation forecasts
  (``validation.parquet``), never on test; the weighted ensemble's validation score is
  cross-fitted (each half with the other half's weights), as in a run;
- every row is scored on the test windows and on validation, and the recommended model is the
  greenest within the quality target, chosen on validation, as ``run`` does;
- the result is a run directory (config.yaml of the first member, metrics.json,
  predictions.parquet, validation.parquet, its own ledger for the combination). An ensemble's
  energy is its members' bills (read from their runs) plus the combination, metered here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from greentune.config import RunConfig
from greentune.data.windows import ForecastData, prepare_forecast_data
from greentune.energy.session import metered
from greentune.ensemble_file import Combination, save_ensemble
from greentune.errors import CheckpointError, ConfigError, DataError
from greentune.evaluate.ensemble import KINDS, combine, fit_weights
from greentune.evaluate.table import LABELS
from greentune.results import Forecast, ModelResult, RunMetrics
from greentune.rundir import RunDir
from greentune.tasks.forecast.ensemble import cross_fitted
from greentune.tasks.forecast.predict import (
    evaluate_forecast,
    prediction_rows,
    quality_for,
    scores_by_target,
    season_steps,
)
from greentune.tasks.forecast.rows import kept_names
from greentune.tasks.members import (
    Log,
    Member,
    bill_ensembles,
    check_members,
    ensemble_run,
    open_member,
)

ENSEMBLE_KINDS = ("weighted", "mean", "median")
"""The rows ``greentune ensemble`` makes unless told (every kind)."""


def open_forecast_member(spec: str) -> Member:
    """``RUN`` (its network's row) or ``RUN:ROW``; refused unless a finished forecasting run
    that has the row and its validation forecasts."""
    member = open_member(spec, "forecast")
    member.run.validation_predictions  # noqa: B018  (refused now, before anything is written)
    kept = kept_names(member.run.path)
    if member.row != member.metrics.model and kept and member.row not in kept:
        # scored but not kept (random_init, a LightGBM design): the ensemble could be scored
        # but never served
        raise ConfigError(
            f"{spec}: row {member.row!r} is scored but not kept in {member.run.path}/rows, so "
            f"an ensemble of it could not forecast; give one of {', '.join(kept)}, or the run "
            "alone for its network"
        )
    return member


def ensemble_runs(
    specs: list[str],
    out: str | Path,
    kinds: tuple[str, ...] = ENSEMBLE_KINDS,
    target: str | None = None,
    log: Log = print,
) -> RunDir:
    """Combine the members ``specs`` into the run directory ``out``; see the module doc."""
    members = [open_forecast_member(s) for s in specs]
    check_members(members, kinds, KINDS, quality_for)
    _check_data(members)
    return ensemble_run(
        members, out, kinds, target, lambda run, cfg: _ensemble(run, cfg, members, log)
    )


def _check_data(members: list[Member]) -> None:
    data0 = dataclasses.asdict(members[0].run.config.data)
    for m in members[1:]:
        data = dataclasses.asdict(m.run.config.data)
        differ = [k for k in data0 if k != "chosen" and data0[k] != data.get(k)]
        if differ:
            k = differ[0]
            raise ConfigError(
                f"{m.run.path} forecast other data than {members[0].run.path}: data.{k} is "
                f"{data.get(k)!r} there and {data0[k]!r} here; members must share the data, "
                "the windows and the splits"
            )


def _ensemble(run: RunDir, cfg: RunConfig, members: list[Member], log: Log) -> RunMetrics:
    with metered(run.path, cfg.energy, "ensemble", log) as meter:
        with meter.window("data"):
            data = prepare_forecast_data(cfg.data)
        season = season_steps(data, cfg.eval.season_length)
        with meter.window("ensemble"):
            test = {m.name: _forecast(m, data, "test") for m in members}
            val = {m.name: _forecast(m, data, "val") for m in members}
            y_val = data.target_values()[data.val.origins[:, None] + np.arange(data.horizon)]
            weights = fit_weights(val, y_val)
            rows = {f"ensemble-{k}": combine(k, test, weights) for k in cfg.eval.ensembles}
            val_rows = {f"ensemble-{k}": cross_fitted(k, val, y_val) for k in cfg.eval.ensembles}
    metrics = RunMetrics(
        task="forecast",
        model=f"ensemble-{cfg.eval.ensembles[0]}",
        test={},
        data={"source": str(cfg.data.path), "members": [str(m.run.path) for m in members]},
    )
    for m in members:
        own = m.metrics.test[m.row]
        metrics.test[m.name] = ModelResult(
            evaluate_forecast(data, data.test.origins, test[m.name], season),
            fit_s=own.fit_s,
            predict_s=own.predict_s,
            predictions=own.predictions,
            bill=own.bill,
        )
    for name, fc in rows.items():
        metrics.test[name] = ModelResult(
            evaluate_forecast(data, data.test.origins, fc, season),
            predictions=len(data.test.origins),
        )
    all_val = {**val, **val_rows}
    metrics.validation = {
        n: evaluate_forecast(data, data.val.origins, f, season) for n, f in all_val.items()
    }
    names = [m.name for m in members]
    save_ensemble(
        run,
        [(m.name, m.run, m.row, m.metrics.test[m.row].scores) for m in members],
        {n: Combination(n.removeprefix("ensemble-"), _weights_of(n, weights)) for n in rows},
    )
    metrics.ensembles = {
        n: {"kind": n.removeprefix("ensemble-"), "members": names}
        | ({"weights_by_step": np.round(weights, 4).tolist()} if n == "ensemble-weighted" else {})
        for n in rows
    }
    if meter.enabled:
        bill_ensembles(run, cfg, members, metrics, quality_for(cfg))
    frames = [prediction_rows(data, data.test.origins, f, n) for n, f in {**test, **rows}.items()]
    predictions = pd.concat(frames, ignore_index=True)
    metrics.by_target = scores_by_target(data, predictions, season)
    run.write_predictions(predictions)
    val_frames = [prediction_rows(data, data.val.origins, f, n) for n, f in all_val.items()]
    run.write_validation_predictions(pd.concat(val_frames, ignore_index=True))
    key = quality_for(cfg).metric
    log(
        f"ensemble of {len(members)} members ({', '.join(names)}): "
        + ", ".join(f"{n} {LABELS[key]} {metrics.test[n].score(key):.3f}" for n in rows)
    )
    return metrics


def _weights_of(name: str, weights: np.ndarray) -> np.ndarray | None:
    return weights if name == "ensemble-weighted" else None


def merge_forecasts(combination: Combination, frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The members' forecasts (``ForecastPredictor`` frames of one input) combined as
    ``greentune ensemble`` combined their saved ones, at the origins every member forecast
    (a member that reads further back starts its backtest later)."""
    shared = set.intersection(*(set(f["origin"]) for f in frames))
    if not shared:
        raise DataError(
            "the members forecast no origin in common: give a history long enough for the "
            "member that reads furthest back"
        )
    frames = [
        f[f["origin"].isin(shared)].sort_values(["origin", "step"], kind="stable") for f in frames
    ]
    template = frames[0].reset_index(drop=True)
    targets = [c.removesuffix("_forecast") for c in template.columns if c.endswith("_forecast")]
    horizon = int(template["step"].max()) if len(template) else 0
    n = len(shared)
    weights = combination.weights
    if weights is not None and weights.shape[0] != horizon:
        raise CheckpointError(
            f"the ensemble's weights are for {weights.shape[0]} horizon steps and its members "
            f"forecast {horizon}: make the ensemble again with greentune ensemble"
        )
    members: dict[str, Forecast] = {}
    for i, f in enumerate(frames):

        def arr(col: str, f: pd.DataFrame = f) -> np.ndarray:
            return f[col].to_numpy(dtype=float).reshape(n, horizon)

        levels = _levels(f, targets[0])
        point = np.stack([arr(f"{t}_forecast") for t in targets], axis=-1)
        quantiles = {q: np.stack([arr(f"{t}_q{q:g}") for t in targets], -1) for q in levels}
        members[str(i)] = Forecast(point, quantiles or None)
    fc = combine(combination.kind, members, combination.weights)
    combined = fc.quantiles or {}
    out = template.copy()
    for j, t in enumerate(targets):
        out[f"{t}_forecast"] = fc.point[..., j].reshape(-1)
        for q in _levels(template, t):  # a level some member lacks is left out, as combine does
            col = f"{t}_q{q:g}"
            if q in combined:
                out[col] = combined[q][..., j].reshape(-1)
            else:
                out = out.drop(columns=col)
    return out


def _levels(frame: pd.DataFrame, target: str) -> list[float]:
    prefix = f"{target}_q"
    return [float(c.removeprefix(prefix)) for c in frame.columns if c.startswith(prefix)]


def _forecast(m: Member, data: ForecastData, split: str) -> Forecast:
    """The member's saved forecasts of ``split`` as (N, H, T) arrays, checked against the
    windows of the data: the same origins, steps and targets, the same actual values."""
    frame = m.run.predictions if split == "test" else m.run.validation_predictions
    frame = frame[frame.model == m.row]
    origins = data.test.origins if split == "test" else data.val.origins
    n, h, t = len(origins), data.horizon, data.n_targets
    if len(frame) != n * h * t:
        raise DataError(
            f"{m.run.path}: {len(frame)} {split} forecasts of {m.row}, not the {n} x {h} x {t} "
            "windows of the first member's data: the runs did not forecast the same windows"
        )
    order = {c: i for i, c in enumerate(data.target_cols)}
    frame = frame.assign(_t=frame.target.map(order)).sort_values(["origin", "step", "_t"])
    times = pd.DatetimeIndex(frame.origin.to_numpy()[:: h * t])
    expected = data.frame.index[origins]
    if frame._t.isna().any() or len(times) != n or not (times == expected).all():
        raise DataError(
            f"{m.run.path}: the {split} forecasts of {m.row} are for other origins or targets "
            f"than the data's ({expected[0]} ... {expected[-1]}, {', '.join(data.target_cols)})"
        )
    y = data.target_values()[origins[:, None] + np.arange(h)]
    if not np.allclose(frame.y_true.to_numpy().reshape(n, h, t), y, equal_nan=True):
        raise DataError(
            f"{m.run.path}: the actual values in its {split} forecasts differ from "
            f"{data.report.origin}: the data changed since the run; run it again"
        )
    point = frame.y_pred.to_numpy(dtype=float).reshape(n, h, t)
    levels = [c for c in frame.columns if c.startswith("q") and c[1:].replace(".", "").isdigit()]
    quantiles = {
        float(c[1:]): frame[c].to_numpy(dtype=float).reshape(n, h, t)
        for c in levels
        if frame[c].notna().all()
    }
    return Forecast(point, quantiles or None)
