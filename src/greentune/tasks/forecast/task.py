"""The forecasting task: what is particular to forecasting runs once they exist."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd
from rich.markup import escape

from greentune.config import RunConfig
from greentune.data.shape import channels_of, default_patch_len, needs_shape, resolve_shape
from greentune.data.sources import load_table, resolve
from greentune.data.validate import clean_frame
from greentune.data.windows import prepare_forecast_data, with_scaler
from greentune.ensemble_file import is_ensemble_of_runs
from greentune.errors import ConfigError, DataError
from greentune.evaluate.table import forecast_table, series_table, verdict
from greentune.privacy.report import privacy_line, row_label
from greentune.results import ModelResult, Quality, RunMetrics
from greentune.rundir import RunDir
from greentune.tasks.base import LoadedRun, Predictor
from greentune.tasks.ensemble_predictor import RunsPredictor, refuse_ensemble
from greentune.tasks.forecast.artifacts import save_model
from greentune.tasks.forecast.batches import make_batches
from greentune.tasks.forecast.ensemble import RANDOM_INIT
from greentune.tasks.forecast.ensemble_runs import ENSEMBLE_KINDS, ensemble_runs, merge_forecasts
from greentune.tasks.forecast.predict import (
    QUALITY,
    evaluate_forecast,
    prediction_rows,
    quality_for,
    scores_by_target,
    season_steps,
)
from greentune.tasks.forecast.predictor import ForecastPredictor
from greentune.tasks.forecast.remedies import forecast_remedies
from greentune.tasks.forecast.transfer import source_data
from greentune.train.callbacks import Callback
from greentune.train.defaults import TrainDefault, with_train_defaults
from greentune.tuning.methods import merge_adapter

TRAIN_DEFAULTS: Mapping[str, TrainDefault] = MappingProxyType(
    {
        "lora": TrainDefault(
            1e-4,
            1,
            "chosen on validation of other data, Victoria before 2014, 3 seeds: "
            "benchmarks/results/energy_other_data.md",
        ),
        "full": TrainDefault(
            1e-5,
            2,
            "chosen on the demo's validation split from 1e-5, 3e-5 and 1e-4, 3 seeds; 3e-6, added "
            "later, tied with it and trains longer: benchmarks/results/energy_trainer.md",
        ),
    }
)
"""``auto`` lr and patience per PEFT method; other methods get ``train.defaults.GENERIC``."""


class ForecastTask:
    name = "forecast"
    quality = QUALITY
    privacy_unit = "training window"
    audit_held_out: tuple[str, ...] = ("val", "test")
    federated = True
    selection_scores: tuple[str, ...] = ("loss", "mape")
    train_defaults: Mapping[str, TrainDefault] = TRAIN_DEFAULTS

    def quality_of(self, cfg: RunConfig) -> Quality:
        return quality_for(cfg)

    def resolve_config(self, cfg: RunConfig) -> RunConfig:
        """The source's defaults, then the window shape from the data itself (read once more
        here, so config.yaml holds concrete steps before training starts), and the training
        defaults for the PEFT method."""
        self.quality_of(cfg)  # a classifier's score is refused before any data is read
        if "selected" in cfg.eval.ensembles:
            raise ConfigError(
                "eval.ensembles: selected combines classifiers (greentune ensemble --kinds "
                "selected); a forecast's weights per horizon step fitted on validation are "
                "eval.ensembles=[weighted]"
            )
        cfg = with_train_defaults(cfg, self.train_defaults, self.name)
        data = resolve(cfg.data)
        if needs_shape(data) or cfg.model.patch_len is None:
            frame, report = clean_frame(load_table(data), data)
            data, _ = resolve_shape(data, frame.index, report.origin, channels_of(data, frame))
            model = cfg.model
            if model.patch_len is None:
                assert isinstance(data.context_length, int)
                patch = default_patch_len(frame.index[1] - frame.index[0], data.context_length)
                model = dataclasses.replace(model, patch_len=patch)
                data = dataclasses.replace(data, chosen=(*data.chosen, f"model.patch_len {patch}"))
            return dataclasses.replace(cfg, data=data, model=model)
        return dataclasses.replace(cfg, data=data)

    def private_config(self, cfg: RunConfig) -> RunConfig:
        """Scaling by public ranges instead of training statistics; the skip path starts at
        the seasonal naive instead of a ridge fitted on the training rows."""
        data = cfg.data
        if data.scaler == "standard":
            data = resolve(dataclasses.replace(data, scaler="bounds"))
        model = cfg.model
        if model.skip_init in ("ridge", "lightgbm"):  # both are fitted on the training rows
            model = dataclasses.replace(model, skip_init="seasonal")
        return dataclasses.replace(cfg, data=data, model=model)

    def privacy_notes(self, cfg: RunConfig) -> list[str]:
        notes = []
        if cfg.data.scaler == "bounds":
            notes.append("inputs scaled by public ranges (data.bounds), not fitted on the data")
        if cfg.model.linear_skip and cfg.model.skip_init == "transfer":
            fitted_on = source_data(cfg) or "that run's data"
            notes.append(
                f"the skip path starts from {cfg.model.skip_from}'s, fitted on {fitted_on}: "
                "private only if that data is public (its rows get no protection) and holds "
                "none of this run's training rows"
            )
        elif cfg.model.linear_skip and cfg.model.skip_init != "ridge":
            notes.append(
                f"the skip path starts at {cfg.model.skip_init} init, not at a ridge fitted on "
                "the training rows (which would not be private)"
                + (
                    "; the seasonal period is chosen on the validation windows (where the "
                    "context holds more than one)"
                    if cfg.model.skip_init == "seasonal"
                    else ""
                )
            )
        return notes

    def train_callbacks(self, cfg: RunConfig) -> list[Callback]:
        return forecast_remedies(cfg)

    def load_predictor(self, run: RunDir) -> Predictor:
        if is_ensemble_of_runs(run):
            return RunsPredictor.load(run, merge_forecasts)
        return ForecastPredictor.load(run)

    def evaluate(self, run: RunDir, predictor: Predictor) -> RunMetrics:
        """The saved model on the run's test windows again; baselines keep their scores."""
        refuse_ensemble(predictor)
        assert isinstance(predictor, ForecastPredictor)
        metrics = run.metrics
        cfg = run.config
        data = with_scaler(prepare_forecast_data(cfg.data), predictor.scaler)
        saved = metrics.data or {}
        now = {"test_start": str(data.frame.index[data.test_start]), "test": len(data.test)}
        was = {"test_start": saved.get("test_start"), "test": saved.get("windows", {}).get("test")}
        if now != was:
            raise DataError(
                f"{data.report.origin} no longer gives the run's test windows (run: "
                f"{was['test']} from {was['test_start']}; now: {now['test']} from "
                f"{now['test_start']}); the baselines in metrics.json would not be comparable. "
                "Use greentune predict --origins daily for new data"
            )
        test = data.test.origins
        season = season_steps(data, cfg.eval.season_length)
        fc = predictor.forecast(data, test)
        metrics.result.scores.update(evaluate_forecast(data, test, fc, season))
        mine = scores_by_target(data, prediction_rows(data, test, fc, metrics.model), season)
        if mine is not None:
            metrics.by_target = {**(metrics.by_target or {}), **mine}
        run.write_metrics(metrics)
        return metrics

    def load_for_compression(self, run: RunDir) -> LoadedRun:
        cfg = run.config
        metrics = run.metrics
        predictor = ForecastPredictor.load(run)
        if predictor.hybrid is not None:
            raise ConfigError(
                f"{run.path} is a hybrid (model.skip_init=lightgbm): its forecasts need the "
                "LightGBM base beside the network, which compress does not export; compress a "
                "run with skip_init=ridge, or serve this one as it is"
            )
        model = predictor.model
        model.backbone = merge_adapter(model.backbone, run.path)
        data = with_scaler(prepare_forecast_data(cfg.data), predictor.scaler)
        batches = {
            split: make_batches(cfg, data, data.split(split).origins, predictor.tokenizer)
            for split in ("train", "val", "test")
        }
        test = data.test.origins
        season = season_steps(data, cfg.eval.season_length)
        name = metrics.model

        def score(m: Any) -> tuple[ModelResult, pd.DataFrame]:
            fc = predictor.with_model(m).forecast(data, test)
            result = ModelResult(evaluate_forecast(data, test, fc, season))
            return result, prediction_rows(data, test, fc, name)

        def by_target(frame: pd.DataFrame) -> dict[str, dict[str, float]] | None:
            return (scores_by_target(data, frame, season) or {}).get(name)

        inputs = (
            ("past", "future")
            if model.spec.encoder == "patch"
            else ("input_ids", "attention_mask", "past", "future")
        )
        return LoadedRun(
            run=run,
            cfg=cfg,
            task=self.name,
            model_name=name,
            model=model.eval(),
            batches=batches,  # type: ignore[arg-type]
            quality=self.quality_of(cfg),
            input_names=inputs,
            inner_attr="backbone",
            score=score,
            save_torch=lambda m, d: save_model(m, predictor.tokenizer, data, d),
            by_target=by_target if data.n_targets > 1 else None,
        )

    def ensemble(
        self,
        specs: list[str],
        out: str | Path,
        kinds: tuple[str, ...] | None,
        target: str | None,
        log: Callable[[str], None],
    ) -> RunDir:
        return ensemble_runs(specs, out, ENSEMBLE_KINDS if kinds is None else kinds, target, log)

    def render(self, metrics: RunMetrics, quality: Quality) -> list[Any]:
        results = {row_label(metrics.privacy, n): r.to_dict() for n, r in metrics.test.items()}
        title = "test split (same windows for every model)"
        line = privacy_line(metrics.privacy)
        start = network_start(metrics)
        start = row_label(metrics.privacy, start) if start else None
        warnings = (metrics.data or {}).get("warnings") or []
        series = []
        if metrics.by_target:
            picked = metrics.energy.greenest if metrics.energy else None
            shown = [*([picked] if picked else []), metrics.model, "lightgbm"]
            series = [series_table(metrics.by_target, shown, quality.metric, picked)]
        return [
            forecast_table(results, metrics.model, title, start, quality.metric),
            *(f"  {line}" for line in verdict(results, metrics.model, start, quality.metric)),
            *([f"  {line}"] if line else []),
            *series,
            *(f"  [bold yellow]warning[/]: {escape(w)}" for w in warnings),
        ]


def network_start(metrics: RunMetrics) -> str | None:
    """The baseline row the fine-tuned network starts from: the one billed for a fit made
    inside the network's training (``linear`` for the ridge skip path, ``lightgbm`` for a
    hybrid's base). The random-init ablation and the ensembles reuse that fit too; neither is
    a start."""
    others = {metrics.model, RANDOM_INIT, *(metrics.ensembles or {})}
    for name, row in metrics.test.items():
        fit = (row.energy_windows or {}).get("fit") or {}
        if name not in others and any(w.startswith("train/") for w in fit):
            return name
    return None
