"""Forecasting recipe: data -> ridge skip path -> model -> PEFT -> loop -> test -> baselines.

Phases run inside meter windows: data, train (ridge-skip, epoch-N, validate-N), test, save,
baseline/<name>, select/<row>, ensemble and save-rows; each result's ``energy_windows`` says
which windows it is billed for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from greentune.config import RunConfig, replace
from greentune.data.windows import ForecastData, prepare_forecast_data
from greentune.distributed import ranks
from greentune.errors import ConfigError, DataError
from greentune.evaluate.baselines import BASELINES, baseline_options, left_out, run_baseline
from greentune.evaluate.peers import check_peers
from greentune.models.backbone import count_parameters
from greentune.models.forecaster import Forecaster
from greentune.results import Forecast, ModelResult, RunMetrics, energy_windows
from greentune.tasks.forecast.artifacts import save_model
from greentune.tasks.forecast.batches import make_batches
from greentune.tasks.forecast.ensemble import (
    MODEL,
    RANDOM_INIT,
    SELECT,
    ensemble_members,
    select,
)
from greentune.tasks.forecast.hybrid import (
    BASE_WINDOW,
    HybridBase,
    base_of,
    fit_hybrid_base,
    is_hybrid,
)
from greentune.tasks.forecast.model import build_model, weights_word
from greentune.tasks.forecast.predict import (
    evaluate_forecast,
    predict_scaled,
    prediction_rows,
    scores_by_target,
    season_steps,
    to_forecast,
    validator,
)
from greentune.tasks.forecast.rows import keep_rows
from greentune.tasks.forecast.skip import RIDGE_FILE, SkipInit, ridge_skip
from greentune.train.callbacks import Callback
from greentune.train.loop import (
    LoopResult,
    configure_threads,
    threads_line,
    total_optimizer_steps,
    train,
)
from greentune.train.recipe import RECIPES, RecipeContext
from greentune.tuning.methods import method_callbacks

Log = Callable[[str], None]


@RECIPES.register("forecast")
def run_forecast(ctx: RecipeContext) -> RunMetrics:
    """The whole forecasting run; returns metrics.json's content (written by the caller)."""
    cfg, log, window = ctx.cfg, ctx.log, ctx.window
    log(threads_line(configure_threads(cfg.train)))
    t0 = time.perf_counter()
    with window("data"):
        data = prepare_forecast_data(cfg.data)
    log(
        f"data: {data.report.origin}: {data.report.rows:,} rows every {data.report.step}; windows "
        f"train {len(data.train):,} / val {len(data.val):,} / test {len(data.test):,}"
        + (f"; {'; '.join(data.report.notes)}" if data.report.notes else "")
    )
    for warning in data.report.warnings:
        log(f"warning: {warning}")
    prep_s = time.perf_counter() - t0
    season = season_steps(data, cfg.eval.season_length)
    check_before_training(cfg, data, season)
    test = data.test.origins
    checkpoints = ctx.run.checkpoint_dir
    hybrid: HybridBase | None = None
    with window("train"):
        t_base = time.perf_counter()
        if is_hybrid(cfg):
            with window(BASE_WINDOW):
                hybrid = fit_hybrid_base(data, cfg.model.quantiles, log)
        base_s = time.perf_counter() - t_base
        with window("ridge-skip"):
            skip, skip_s = ridge_skip(cfg, data, log, checkpoints / RIDGE_FILE)
        skip_s += base_s
        model, tokenizer, result = train_network(
            cfg, data, log, checkpoints, ctx.resume, skip, ctx.callbacks, hybrid
        )
    t1 = time.perf_counter()
    with window("test"):
        batches = make_batches(cfg, data, test, tokenizer, base_of(hybrid, data, test))
        fc = to_forecast(
            data, predict_scaled(model, batches, cfg.eval.batch_size), cfg.model.quantiles
        )
    fc.predict_s = time.perf_counter() - t1
    name = f"{cfg.model.backbone}-{cfg.model.encoder}-{cfg.peft.method}"
    results = {
        name: ModelResult(
            evaluate_forecast(data, test, fc, season),
            fit_s=skip_s + result.state.train_s,
            predict_s=fc.predict_s,
            predictions=len(test),
            energy_windows={"fit": {"train": 1.0}, "predict": {"test": 1.0}},
        )
    }
    frames = [prediction_rows(data, test, fc, name)]
    scored = {MODEL: (fc, results[name])}
    with window(f"{SELECT}/{MODEL}"):  # every rank: predicting gathers shards from all of them
        val_b = make_batches(
            cfg, data, data.val.origins, tokenizer, base_of(hybrid, data, data.val.origins)
        )
        val_fc = {
            MODEL: to_forecast(
                data, predict_scaled(model, val_b, cfg.eval.batch_size), cfg.model.quantiles
            )
        }
    main = ranks.is_main()
    if main:
        with window("save"):
            save_model(model, tokenizer, data, ctx.run.model_dir, hybrid)
    for baseline in cfg.eval.baselines:
        if baseline != RANDOM_INIT and not main:
            continue  # one-process baselines run on rank 0; the ablation trains on every rank
        why = left_out(baseline, data)
        if why is not None:
            log(f"baseline {baseline}: left out: {why}")
            continue
        with window(f"baseline/{baseline}"):
            bfc, bval = _baseline(baseline, ctx, data, test, skip, skip_s, hybrid)
        ridge = skip is not None and cfg.model.skip_init == "ridge"
        reused = ("train/ridge-skip",) if ridge and baseline in ("linear", RANDOM_INIT) else ()
        if hybrid is not None and baseline in ("lightgbm", RANDOM_INIT):
            reused = (f"train/{BASE_WINDOW}",)  # the LightGBM fit the hybrid starts from
        results[baseline] = ModelResult(
            evaluate_forecast(data, test, bfc, season),
            fit_s=bfc.fit_s,
            predict_s=bfc.predict_s,
            predictions=len(test),
            energy_windows=energy_windows(f"baseline/{baseline}", bfc.fit_s, bfc.predict_s, reused),
        )
        frames.append(prediction_rows(data, test, bfc, baseline))
        scored[baseline] = (bfc, results[baseline])
        if bval is not None:
            val_fc[baseline] = bval
    metrics = RunMetrics(
        task="forecast",
        model=name,
        test=results,
        training=result.summary(),
        data=_data_summary(data, prep_s, season),
    )
    if main:
        ensembles, val_rows, rows = select(
            cfg, data, season, scored, val_fc, metrics, ctx.window, log
        )
        predictions = pd.concat([*frames, *ensembles], ignore_index=True)
        metrics.by_target = scores_by_target(data, predictions, season)
        ctx.run.write_predictions(predictions)
        ctx.run.write_validation_predictions(val_rows)
        with window("save-rows"):
            baselines = {b: fc for b, (fc, _) in scored.items() if b != MODEL}
            keep_rows(ctx.run.path, data, baselines, rows, cfg.privacy.dp.enabled, log)
    return metrics


def train_network(
    cfg: RunConfig,
    data: ForecastData,
    log: Log,
    checkpoint_dir: Path | None,
    resume: bool,
    skip: SkipInit | None = None,
    callbacks: list[Callback] | None = None,
    hybrid: HybridBase | None = None,
) -> tuple[Forecaster, Any, LoopResult]:
    total_steps = total_optimizer_steps(len(data.train), cfg.train)
    model, tokenizer = build_model(cfg, data, total_steps, skip, hybrid)
    trainable, total = count_parameters(model)
    log(
        f"model: {cfg.model.backbone} ({weights_word(cfg)}), "
        f"{cfg.model.encoder} encoder, method {cfg.peft.method}: "
        f"{trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.1f} %)"
    )
    train_o, val_o = data.train.origins, data.val.origins
    train_b = make_batches(cfg, data, train_o, tokenizer, base_of(hybrid, data, train_o, True))
    val_b = make_batches(cfg, data, val_o, tokenizer, base_of(hybrid, data, val_o))
    result = train(
        model,
        train_b,
        cfg.train,
        cfg.seed,
        validate=validator(
            cfg.train.select_on, model, val_b, cfg.eval.batch_size, data, cfg.model.quantiles
        ),
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        callbacks=[*method_callbacks(model.backbone), *(callbacks or [])],
    )
    log(result.trained_line())
    return model, tokenizer, result


def check_before_training(cfg: RunConfig, data: ForecastData, season: int) -> None:
    """Refuse now what would otherwise fail after minutes of training."""
    if data.channel_independent and cfg.model.encoder != "patch":
        raise ConfigError(
            "data.channel_independent needs model.encoder=patch (the text encoder serialises "
            "all channels into one prompt)"
        )
    ensemble_members(cfg)  # a member that cannot join fails now, not after training
    if is_hybrid(cfg) and data.channel_independent:
        raise ConfigError(
            "model.skip_init=lightgbm (a hybrid) fits one LightGBM per target and needs "
            "data.channel_independent=false; use skip_init=ridge for channel-independent data"
        )
    valid = [*BASELINES.names(), RANDOM_INIT]
    unknown = [b for b in cfg.eval.baselines if b not in valid]
    if unknown:
        raise ConfigError(
            f"eval.baselines: unknown {', '.join(unknown)}; valid choices: {', '.join(valid)}"
        )
    check_peers(cfg.eval.baselines)
    if season >= data.val_start:
        raise DataError(
            f"{data.report.origin}: MASE needs more than eval.season_length={season} training "
            f"rows; there are {data.val_start}. Set eval.season_length or use more data"
        )


def _baseline(
    name: str,
    ctx: RecipeContext,
    data: ForecastData,
    origins: np.ndarray,
    skip: SkipInit | None,
    skip_s: float,
    hybrid: HybridBase | None = None,
) -> tuple[Forecast, Forecast | None]:
    """The baseline's test forecast, and for random_init its validation forecast (its network
    is gone afterwards); other baselines forecast validation later from their cached fits."""
    cfg, log = ctx.cfg, ctx.log
    if name != RANDOM_INIT:
        fc = run_baseline(name, data, origins, cfg.model.quantiles, baseline_options(cfg))
        log(f"baseline {name}: fitted in {fc.fit_s:.1f} s")
        return fc, None
    ablation = replace(cfg, model={"pretrained": False})
    log("baseline random_init: the same network from random initialisation")
    model, tokenizer, result = train_network(
        ablation, data, log, None, False, skip, ctx.baseline_callbacks(), hybrid
    )
    t0 = time.perf_counter()

    def forecast(at: np.ndarray) -> Forecast:
        batches = make_batches(ablation, data, at, tokenizer, base_of(hybrid, data, at))
        out = predict_scaled(model, batches, cfg.eval.batch_size)
        return to_forecast(data, out, cfg.model.quantiles)

    fc = forecast(origins)
    fc.fit_s, fc.predict_s = skip_s + result.state.train_s, time.perf_counter() - t0
    return fc, forecast(data.val.origins)


def _data_summary(data: ForecastData, prep_s: float, season: int) -> dict[str, Any]:
    """metrics.json's ``data``: where the series came from and how it was cut."""
    return {
        "source": data.report.origin,
        "rows": data.report.rows,
        "step": data.report.step,
        "start": data.report.start,
        "end": data.report.end,
        "test_start": str(data.frame.index[data.test_start]),
        "val_start": str(data.frame.index[data.val_start]),
        "windows": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "dropped_windows": data.dropped_windows,
        "notes": data.report.notes,
        **({"warnings": data.report.warnings} if data.report.warnings else {}),
        "prepare_s": prep_s,
        "mase_season_steps": season,
    }
