"""Use a finished run: re-evaluate it on its test split, or forecast from new data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from greentune.config import DataConfig, RunConfig
from greentune.data.sources import RawTable, load_table, resolve
from greentune.data.validate import clean_frame
from greentune.data.windows import ForecastData, WindowSet, featurize, prepare_forecast_data
from greentune.errors import CheckpointError, DataError
from greentune.models.classifier import load_saved_classifier
from greentune.models.forecaster import Forecaster, load_forecaster
from greentune.rundir import read_metrics, read_run, write_json
from greentune.train.forecast import (
    evaluate_forecast,
    load_scaler,
    make_batches,
    predict_scaled,
    season_steps,
    to_forecast,
)


def _model_dir(run: Path) -> Path:
    model_dir = run / "model"
    if not model_dir.is_dir():
        raise CheckpointError(f"{run} has no model/; the run did not finish training")
    return model_dir


def load_run_model(run: Path, cfg: RunConfig) -> tuple[Forecaster, Any]:
    """The run's forecaster: the trained torch model, or a compressed variant of it (int8,
    ONNX) behind the same call interface."""
    model_dir = _model_dir(run)
    if variant_format(model_dir) != "torch":
        from greentune.compress.formats import load_forecast_variant

        model = load_forecast_variant(model_dir)
    else:
        model = load_forecaster(model_dir)
    tokenizer = None
    if model.spec.encoder == "text":  # the tokenizer saved with the run: no hub needed
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir / "backbone", local_files_only=True)
    return model, tokenizer


def load_run_classifier(run: Path) -> tuple[Any, Any, list[str]]:
    """(classifier, tokenizer, label names) of a classification run or of its compressed variant."""
    model_dir = _model_dir(run)
    if variant_format(model_dir) != "torch":
        from greentune.compress.formats import load_classify_variant

        return load_classify_variant(model_dir)
    return load_saved_classifier(model_dir)


def variant_format(model_dir: Path) -> str:
    """'torch' for a trained (or pruned/distilled) model; what compress wrote otherwise."""
    marker = model_dir / "variant.json"
    if not marker.is_file():
        return "torch"
    try:
        return str(json.loads(marker.read_text())["format"])
    except (json.JSONDecodeError, KeyError) as exc:
        raise CheckpointError(f"{marker} is damaged ({exc}); compress the parent again") from None


def evaluate_run(path: str | Path) -> tuple[dict[str, Any], RunConfig]:
    """Score the saved model on the run's test windows again; baselines come from metrics.json."""
    run, cfg = read_run(path)
    if cfg.task == "classify":
        from greentune.train.classify import evaluate_classifier_run

        return evaluate_classifier_run(run, cfg, load_run_classifier(run)), cfg
    metrics = read_metrics(run)
    data = prepare_forecast_data(cfg.data)
    saved = metrics["data"]
    now = {"test_start": str(data.frame.index[data.test_start]), "test": len(data.test.origins)}
    if now != {"test_start": saved["test_start"], "test": saved["windows"]["test"]}:
        raise DataError(
            f"{data.report.origin} no longer gives the run's test windows (run: "
            f"{saved['windows']['test']} from {saved['test_start']}; now: {now['test']} from "
            f"{now['test_start']}); the baselines in metrics.json would not be comparable. "
            "Use greentune predict --origins daily for new data"
        )
    model, tokenizer = load_run_model(run, cfg)
    test = data.test.origins
    out = predict_scaled(model, make_batches(cfg, data, test, tokenizer), cfg.eval.batch_size)
    fc = to_forecast(data, out, cfg.model.quantiles)
    fresh = evaluate_forecast(data, test, fc, season_steps(data, cfg.eval.season_length))
    name = metrics["model"]
    metrics["test"][name] = {**metrics["test"][name], **fresh}
    write_json(run / "metrics.json", metrics)
    return metrics, cfg


def predict_run(path: str | Path, data_path: str | Path, origins: str = "last") -> pd.DataFrame:
    """Forecast from new data with a run's model and the scaler fitted on its training rows.

    ``origins='last'`` forecasts the ``horizon`` steps after the last observed target; the file
    must then hold the known covariates (e.g. the temperature forecast) for those steps, unless
    the model uses calendar features only, in which case the timestamps are generated.
    ``origins='daily'`` backtests every local midnight with full context and horizon in the file.
    """
    run, cfg = read_run(path)
    if cfg.task != "forecast":
        raise CheckpointError(f"{run} is a {cfg.task} run; predict takes forecasting runs")
    model, tokenizer = load_run_model(run, cfg)
    columns = json.loads((run / "model" / "columns.json").read_text())
    dcfg = _new_data_config(cfg.data, Path(data_path))
    table = load_table(dcfg)
    frame, report = clean_frame(table, dcfg)
    L, H = model.spec.context_length, model.spec.horizon
    if origins == "last":
        frame = _extend_horizon(frame, columns, H, table)
    featured, targets, past, known = featurize(frame, dcfg)
    expected = [*columns["targets"], *columns["past"], *columns["known"]]
    if [*targets, *past, *known] != expected:
        raise DataError(
            f"{table.origin}: columns {[*targets, *past, *known]} differ from the run's {expected}"
        )
    scaler = load_scaler(run / "model")
    scaled = scaler.transform(featured.to_numpy(dtype=float)).astype(np.float32)
    chosen = _choose_origins(featured, targets, origins, L, H, table.origin)
    _check_inputs(featured, scaled, chosen, L, H, len(targets) + len(past), table.origin)
    data = ForecastData(
        featured,
        targets,
        past,
        known,
        scaler,
        np.nan_to_num(scaled),
        L,
        H,
        0,
        0,
        WindowSet("train", chosen[:0]),
        WindowSet("val", chosen[:0]),
        WindowSet("predict", chosen),
        report,
    )
    out = predict_scaled(model, make_batches(cfg, data, chosen, tokenizer), cfg.eval.batch_size)
    fc = to_forecast(data, out, cfg.model.quantiles)
    return _forecast_frame(data, chosen, fc.point, fc.quantiles)


def _new_data_config(cfg: DataConfig, path: Path) -> DataConfig:
    source: Literal["csv", "parquet", "ett"] = (
        "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"
    )
    if cfg.source == "ett":
        source = "ett"
    resolved = resolve(cfg)
    return dataclasses.replace(resolved, source=source, path=str(path), fill_gaps=cfg.fill_gaps)


def _extend_horizon(
    frame: pd.DataFrame, columns: dict[str, list[str]], horizon: int, table: RawTable
) -> pd.DataFrame:
    """Make room for the horizon after the last observed target when no input is missing."""
    target = columns["targets"][0]
    observed = np.flatnonzero(frame[target].notna().to_numpy())
    if len(observed) == 0:
        raise DataError(f"{table.origin}: column {target!r} has no values to forecast from")
    missing = observed[-1] + 1 + horizon - len(frame)
    if missing <= 0:
        return frame
    # only known-future covariates are read over the horizon; derived features are rebuilt
    raw_covariates = [c for c in columns["known"] if c in frame.columns]
    if raw_covariates:
        raise DataError(
            f"{table.origin}: needs {horizon} rows after the last observed {target!r} "
            f"with {', '.join(raw_covariates)} filled (their forecast); it has {horizon - missing}"
        )
    step = frame.index[1] - frame.index[0]
    extra = pd.date_range(frame.index[-1] + step, periods=missing, freq=step)
    return pd.concat([frame, pd.DataFrame(index=extra, columns=frame.columns, dtype=float)])


def _choose_origins(
    frame: pd.DataFrame, targets: list[str], how: str, L: int, H: int, origin: str
) -> np.ndarray:
    observed = np.flatnonzero(frame[targets[0]].notna().to_numpy())
    if how == "last":
        o = int(observed[-1]) + 1
        if o < L:
            raise DataError(f"{origin}: needs {L} observed rows before the forecast; it has {o}")
        return np.array([o])
    if how != "daily":
        raise DataError(f"origins={how!r}: use 'last' or 'daily'")
    idx = frame.index
    mids = np.flatnonzero((idx.hour == 0) & (idx.minute == 0))
    chosen = mids[(mids >= L) & (mids + H <= len(frame))]
    if len(chosen) == 0:
        raise DataError(f"{origin}: no local midnight with {L} steps before and {H} after")
    return chosen


def _check_inputs(
    frame: pd.DataFrame,
    scaled: np.ndarray,
    origins: np.ndarray,
    L: int,
    H: int,
    t: int,
    origin: str,
) -> None:
    for o in origins:
        window = scaled[o - L : o + H].copy()
        window[L:, :t] = 0.0  # future targets and past-only covariates are not inputs
        bad = np.argwhere(np.isnan(window))
        if len(bad):
            row, col = bad[0]
            raise DataError(
                f"{origin}: column {frame.columns[col]!r} is missing at "
                f"{frame.index[o - L + row]}, "
                "inside the window needed for the forecast; fill it (or use --fill-gaps for gaps)"
            )


def _forecast_frame(
    data: ForecastData,
    origins: np.ndarray,
    point: np.ndarray,
    quantiles: dict[float, np.ndarray] | None,
) -> pd.DataFrame:
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
        out[f"{col}_forecast"] = point[..., j].reshape(-1)
        for q, arr in (quantiles or {}).items():
            out[f"{col}_q{q:g}"] = arr[..., j].reshape(-1)
        actual = data.frame[col].to_numpy()[rows].reshape(-1)
        if not np.isnan(actual).all():
            out[f"{col}_actual"] = actual
    return out
