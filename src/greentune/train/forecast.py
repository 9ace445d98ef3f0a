"""Forecasting recipe: data -> model -> PEFT -> loop -> evaluate (+ baselines) -> run directory."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from greentune.config import RunConfig, replace
from greentune.data.text import pad_tokens
from greentune.data.windows import ForecastData, Scaler, prepare_forecast_data
from greentune.distributed import ranks
from greentune.errors import ConfigError, DataError
from greentune.evaluate.baselines import Forecast, run_baseline
from greentune.evaluate.metrics import forecast_metrics, mase_scale
from greentune.models.backbone import (
    count_parameters,
    load_backbone,
    load_tokenizer,
    seed_everything,
)
from greentune.models.encoders import window_prompts
from greentune.models.forecaster import Forecaster, ForecasterSpec, save_forecaster
from greentune.rundir import replace_dir, write_json, write_parquet
from greentune.train.loop import (
    LoopResult,
    Progress,
    Window,
    configure_threads,
    no_window,
    threads_line,
    total_optimizer_steps,
    train,
)
from greentune.train.ridge import RIDGE_FILE, SkipInit, init_skip, ridge_skip
from greentune.tuning.methods import MethodContext, apply_method, step_hook

Log = Callable[[str], None]
RANDOM_INIT = "random_init"
TEXT_MAX_TOKENS = 192


@dataclass
class ForecastBatches:
    """Batches of one split for the loop and for prediction."""

    data: ForecastData
    origins: np.ndarray
    tokens: list[np.ndarray] | None = None
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.origins)

    def get(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        batch = {k: torch.from_numpy(v) for k, v in self.data.batch(self.origins[idx]).items()}
        if self.tokens is not None:
            batch.update(pad_tokens([self.tokens[i] for i in idx], self.pad_id))
        return batch


def build_model(
    cfg: RunConfig, data: ForecastData, total_steps: int, skip: SkipInit | None = None
) -> tuple[Forecaster, Any]:
    m = cfg.model
    seed_everything(cfg.seed)
    text = m.encoder == "text"
    base = load_backbone(m, keep_word_embeddings=text)
    backbone = apply_method(base, cfg.peft, MethodContext(total_steps=total_steps))
    if not text:  # the one-row word embedding is never used: a trainable unused parameter
        base.get_input_embeddings().weight.requires_grad_(False)  # breaks DDP (method full)
    spec = ForecasterSpec(
        encoder=m.encoder,
        n_channels=len(data.columns),
        n_known=len(data.known_cols),
        n_targets=data.n_targets,
        context_length=data.context_length,
        horizon=data.horizon,
        patch_len=m.patch_len,
        quantiles=m.quantiles,
        linear_skip=m.linear_skip,
        pooling=m.pooling,
        channel_independent=data.channel_independent,
    )
    model = Forecaster(spec, backbone, int(base.config.hidden_size))
    if skip is not None and model.skip is not None:
        init_skip(model.skip, skip)
    return model, (load_tokenizer(m) if text else None)


def make_batches(
    cfg: RunConfig, data: ForecastData, origins: np.ndarray, tokenizer: Any
) -> ForecastBatches:
    if tokenizer is None:
        return ForecastBatches(data, origins)
    covariates = [c for c in data.known_cols if c in (cfg.data.covariates or ())]
    prompts = window_prompts(
        data.frame, data.target_cols, covariates, origins, data.context_length, data.horizon
    )
    enc = tokenizer(prompts, truncation=True, max_length=TEXT_MAX_TOKENS)
    tokens = [np.asarray(ids, dtype=np.int64) for ids in enc["input_ids"]]
    return ForecastBatches(data, origins, tokens, int(tokenizer.pad_token_id or 0))


@torch.no_grad()
def predict_scaled(model: Forecaster, batches: ForecastBatches, batch_size: int) -> np.ndarray:
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


def to_forecast(data: ForecastData, out: np.ndarray, quantiles: tuple[float, ...]) -> Forecast:
    """(N, H, T, Q) scaled network output -> point + quantiles in data units."""
    unscaled = data.unscale_target(np.moveaxis(out, -1, 0))  # (Q, N, H, T)
    if not quantiles:
        return Forecast(point=unscaled[0])
    qs = {q: unscaled[i] for i, q in enumerate(quantiles)}
    return Forecast(point=qs[0.5], quantiles=qs)


def validation_loss(model: Forecaster, batches: ForecastBatches, batch_size: int) -> float:
    """Mean loss over the validation windows; with several processes each scores its shard
    and the sums are reduced, so every rank takes the same early-stopping decision."""
    total, n = 0.0, 0
    mine = ranks.shard(len(batches))
    for start in range(0, len(mine), batch_size):
        idx = mine[start : start + batch_size]
        batch = batches.get(idx)
        total += float(model.loss(model(batch), batch)) * len(idx)
        n += len(idx)
    total, n_all = ranks.all_sum([total, float(n)])
    return total / max(n_all, 1.0)


def train_network(
    cfg: RunConfig,
    data: ForecastData,
    log: Log,
    checkpoint_dir: Path | None,
    resume: bool,
    progress: Progress | None,
    skip: SkipInit | None = None,
    window: Window = no_window,
) -> tuple[Forecaster, Any, LoopResult]:
    total_steps = total_optimizer_steps(len(data.train), cfg.train)
    model, tokenizer = build_model(cfg, data, total_steps, skip)
    trainable, total = count_parameters(model)
    log(
        f"model: {cfg.model.backbone} ({_weights_word(cfg)}), "
        f"{cfg.model.encoder} encoder, method {cfg.peft.method}: "
        f"{trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.1f} %)"
    )
    train_b = make_batches(cfg, data, data.train.origins, tokenizer)
    val_b = make_batches(cfg, data, data.val.origins, tokenizer)
    result = train(
        model,
        train_b,
        cfg.train,
        cfg.seed,
        validate=lambda: validation_loss(model, val_b, cfg.eval.batch_size),
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        progress=progress,
        step_hook=step_hook(model.backbone),
        window=window,
    )
    s = result.state
    best = (
        "no epoch beat the starting point on validation: kept it"
        if s.best_epoch == -1
        else f"best epoch {s.best_epoch}"
    )
    resumed = (
        f" (resumed from the checkpoint at step {result.resumed_from_step})"
        if result.resumed_from_step is not None
        else ""
    )
    log(
        f"trained {s.step} steps in {s.train_s:.1f} s ({result.samples_per_s:.0f} samples/s)"
        f"{resumed}, {best}{', stopped early' if s.stopped_early else ''}"
    )
    return model, tokenizer, result


def _weights_word(cfg: RunConfig) -> str:
    from greentune.models.backbone import backbone_config

    if not cfg.model.pretrained:
        return "random init"
    return "pretrained" if backbone_config(cfg.model)[1] else "random init: no pretrained weights"


def evaluate_forecast(
    data: ForecastData, origins: np.ndarray, fc: Forecast, season_length: int
) -> dict[str, float]:
    y = data.target_values()[origins[:, None] + np.arange(data.horizon)]
    scale = mase_scale(data.target_values()[: data.val_start], season_length)
    return forecast_metrics(y, fc.point, scale, fc.quantiles)


def season_steps(data: ForecastData, season_length: int | None) -> int:
    if season_length:
        return season_length
    step = data.frame.index[1] - data.frame.index[0]
    return max(1, int(pd.Timedelta(days=1) / step))


def prediction_rows(
    data: ForecastData, origins: np.ndarray, fc: Forecast, name: str
) -> pd.DataFrame:
    """Long format: one row per (origin, horizon step, target)."""
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


def run_forecast(
    cfg: RunConfig,
    run_dir: Path,
    log: Log,
    resume: bool = False,
    progress: Progress | None = None,
    window: Window = no_window,
) -> dict[str, Any]:
    """The whole forecasting run; returns (and writes) metrics.json's content.

    Phases run inside meter windows: data, train (ridge-skip, epoch-N, validate-N), test, save,
    and baseline/<name>; each result's ``energy_windows`` says which windows it is billed for.
    """
    log(threads_line(configure_threads(cfg.train)))
    t0 = time.perf_counter()
    with window("data"):
        data = prepare_forecast_data(cfg.data)
    log(
        f"data: {data.report.origin}: {data.report.rows:,} rows every {data.report.step}; windows "
        f"train {len(data.train):,} / val {len(data.val):,} / test {len(data.test):,}"
        + (f"; {'; '.join(data.report.notes)}" if data.report.notes else "")
    )
    prep_s = time.perf_counter() - t0
    season = season_steps(data, cfg.eval.season_length)
    check_before_training(cfg, data, season)
    test = data.test.origins
    with window("train"):
        with window("ridge-skip"):
            skip, skip_s = ridge_skip(cfg, data, log, run_dir / "checkpoints" / RIDGE_FILE)
        model, tokenizer, result = train_network(
            cfg, data, log, run_dir / "checkpoints", resume, progress, skip, window
        )
    t1 = time.perf_counter()
    with window("test"):
        batches = make_batches(cfg, data, test, tokenizer)
        fc = to_forecast(
            data, predict_scaled(model, batches, cfg.eval.batch_size), cfg.model.quantiles
        )
    fc.predict_s = time.perf_counter() - t1
    name = f"{cfg.model.backbone}-{cfg.model.encoder}-{cfg.peft.method}"
    results: dict[str, dict[str, Any]] = {name: evaluate_forecast(data, test, fc, season)}
    results[name].update(
        fit_s=skip_s + result.state.train_s,
        predict_s=fc.predict_s,
        predictions=len(test),
        energy_windows={"fit": {"train": 1.0}, "predict": {"test": 1.0}},
    )
    frames = [prediction_rows(data, test, fc, name)]
    main = ranks.is_main()
    if main:
        with window("save"):
            save_model(model, tokenizer, data, run_dir)
    for baseline in cfg.eval.baselines:
        if baseline != RANDOM_INIT and not main:
            continue  # one-process baselines run on rank 0; the ablation trains on every rank
        with window(f"baseline/{baseline}"):
            bfc = _baseline(baseline, cfg, data, test, log, skip, skip_s, window)
        results[baseline] = evaluate_forecast(data, test, bfc, season)
        results[baseline].update(
            fit_s=bfc.fit_s,
            predict_s=bfc.predict_s,
            predictions=len(test),
            energy_windows=_baseline_windows(baseline, bfc, reuses_ridge=skip is not None),
        )
        frames.append(prediction_rows(data, test, bfc, baseline))
    if main:
        write_parquet(run_dir / "predictions.parquet", pd.concat(frames, ignore_index=True))
    metrics = {
        "schema_version": 1,
        "task": "forecast",
        "model": name,
        "test": results,
        "training": result.summary(),
        "data": {
            "source": data.report.origin,
            "rows": data.report.rows,
            "step": data.report.step,
            "start": data.report.start,
            "end": data.report.end,
            "test_start": str(data.frame.index[data.test_start]),
            "val_start": str(data.frame.index[data.val_start]),
            "windows": {"train": len(data.train), "val": len(data.val), "test": len(test)},
            "dropped_windows": data.dropped_windows,
            "notes": data.report.notes,
            "prepare_s": prep_s,
            "mase_season_steps": season,
        },
    }
    if main:
        write_json(run_dir / "metrics.json", metrics)
    return metrics


def check_before_training(cfg: RunConfig, data: ForecastData, season: int) -> None:
    """Refuse now what would otherwise fail after minutes of training."""
    from greentune.evaluate.baselines import BASELINES

    if data.channel_independent and cfg.model.encoder != "patch":
        raise ConfigError(
            "data.channel_independent needs model.encoder=patch (the text encoder serialises "
            "all channels into one prompt)"
        )
    valid = [*BASELINES.names(), RANDOM_INIT]
    unknown = [b for b in cfg.eval.baselines if b not in valid]
    if unknown:
        raise ConfigError(
            f"eval.baselines: unknown {', '.join(unknown)}; valid choices: {', '.join(valid)}"
        )
    if season >= data.val_start:
        raise DataError(
            f"{data.report.origin}: MASE needs more than eval.season_length={season} training "
            f"rows; there are {data.val_start}. Set eval.season_length or use more data"
        )


def _baseline(
    name: str,
    cfg: RunConfig,
    data: ForecastData,
    origins: np.ndarray,
    log: Log,
    skip: SkipInit | None,
    skip_s: float,
    window: Window = no_window,
) -> Forecast:
    if name != RANDOM_INIT:
        fc = run_baseline(name, data, origins, cfg.model.quantiles)
        log(f"baseline {name}: fitted in {fc.fit_s:.1f} s")
        return fc
    ablation = replace(cfg, model={"pretrained": False})
    log("baseline random_init: the same network from random initialisation")
    model, tokenizer, result = train_network(ablation, data, log, None, False, None, skip, window)
    t0 = time.perf_counter()
    out = predict_scaled(
        model, make_batches(ablation, data, origins, tokenizer), cfg.eval.batch_size
    )
    fc = to_forecast(data, out, cfg.model.quantiles)
    fc.fit_s, fc.predict_s = skip_s + result.state.train_s, time.perf_counter() - t0
    return fc


def _baseline_windows(name: str, fc: Forecast, reuses_ridge: bool) -> dict[str, dict[str, float]]:
    """Which metered windows a baseline is billed for.

    A baseline fits and predicts inside one window; its energy is split between the two in
    proportion to their wall times. The linear baseline and the random-init network reuse the
    ridge fit of the model's skip path, so they are billed for that window too.
    """
    own = f"baseline/{name}"
    busy_s = fc.fit_s + fc.predict_s
    fit_share = fc.fit_s / busy_s if busy_s > 0 else 0.0
    fit = {own: fit_share}
    if reuses_ridge and name in ("linear", RANDOM_INIT):
        fit["train/ridge-skip"] = 1.0
    return {"fit": fit, "predict": {own: 1.0 - fit_share}}


def save_model(model: Forecaster, tokenizer: Any, data: ForecastData, run_dir: Path) -> None:
    tmp = run_dir / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted save
    save_forecaster(model, tmp, tokenizer)
    write_json(tmp / "scaler.json", data.scaler.to_dict(data.columns))
    (tmp / "columns.json").write_text(
        json.dumps({"targets": data.target_cols, "past": data.past_cols, "known": data.known_cols})
    )
    replace_dir(tmp, run_dir / "model")


def load_scaler(model_dir: Path) -> Scaler:
    return Scaler.from_dict(json.loads((model_dir / "scaler.json").read_text()))
