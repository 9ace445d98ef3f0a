"""What compression needs from a finished run, for either task: the model with its PEFT adapter
merged into plain weights, the run's data as batches, how to score, how to save."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from greentune.config import RunConfig
from greentune.errors import CompressError
from greentune.rundir import read_metrics, read_run
from greentune.train.loop import Batches

Score = Callable[[Any], tuple[dict[str, Any], pd.DataFrame]]
"""model -> (test metrics, prediction rows in predictions.parquet's layout)."""


@dataclass
class TaskModel:
    """One run, ready to compress: an fp32 torch model and everything around it."""

    run: Path
    cfg: RunConfig
    kind: str
    model_name: str
    model: nn.Module
    batches: dict[str, Batches]
    """train / val / test batches in the run's own split."""
    headline: str
    """The metric the quality guard compares: mape (forecast) or macro_f1 (classify)."""
    higher_is_better: bool
    input_names: tuple[str, ...]
    """The batch keys the network reads (the inputs of an exported graph)."""
    score: Score
    save_torch: Callable[[nn.Module, Path], None]
    """Write a complete model/ folder in the run layout (loadable by evaluate and predict)."""
    loss: Callable[[Any, torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]
    soft_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(
        default=lambda out, teacher: torch.nn.functional.mse_loss(out, teacher)
    )
    """How far a student's output is from its teacher's (distillation and recovery)."""

    def inner(self, model: Any) -> Any:
        """The transformers model inside the task wrapper (its layers get pruned/distilled)."""
        return model.backbone if self.kind == "forecast" else model.model


def merged(model: Any, run: Path) -> Any:
    """A PEFT-wrapped model with the adapter folded into its weights; plain models unchanged."""
    if not hasattr(model, "peft_config"):
        return model
    if not hasattr(model, "merge_and_unload"):
        raise CompressError(
            f"{run}: its PEFT method cannot be merged into the weights (prompt/prefix tuning); "
            "compress a run trained with lora, adalora, ia3, ln-tuning or full"
        )
    return model.merge_and_unload()


def load_task(path: str | Path) -> TaskModel:
    run, cfg = read_run(path)
    if (run / "model" / "variant.json").is_file():
        from greentune.compress.formats import read_variant

        fmt = read_variant(run / "model")["format"]
        if fmt != "torch":
            raise CompressError(
                f"{run} holds a {fmt} model; compress the torch run it came from, or a pruned or "
                "distilled run (those stay torch)"
            )
    metrics = read_metrics(run)
    if cfg.task == "classify":
        return _classify_task(run, cfg, metrics)
    return _forecast_task(run, cfg, metrics)


def _forecast_task(run: Path, cfg: RunConfig, metrics: dict[str, Any]) -> TaskModel:
    from greentune.data.windows import prepare_forecast_data
    from greentune.inference import load_run_model
    from greentune.train.forecast import (
        evaluate_forecast,
        make_batches,
        predict_scaled,
        prediction_rows,
        save_model,
        season_steps,
        to_forecast,
    )

    data = prepare_forecast_data(cfg.data)
    model, tokenizer = load_run_model(run, cfg)
    model.backbone = merged(model.backbone, run)
    batches = {
        split: make_batches(cfg, data, getattr(data, split).origins, tokenizer)
        for split in ("train", "val", "test")
    }
    test = data.test.origins
    season = season_steps(data, cfg.eval.season_length)
    name = metrics["model"]

    def score(m: Any) -> tuple[dict[str, Any], pd.DataFrame]:
        out = predict_scaled(m, batches["test"], cfg.eval.batch_size)
        fc = to_forecast(data, out, cfg.model.quantiles)
        return evaluate_forecast(data, test, fc, season), prediction_rows(data, test, fc, name)

    inputs = (
        ("past", "future")
        if model.spec.encoder == "patch"
        else ("input_ids", "attention_mask", "past", "future")
    )
    return TaskModel(
        run=run,
        cfg=cfg,
        kind="forecast",
        model_name=name,
        model=model.eval(),
        batches=batches,  # type: ignore[arg-type]
        headline="mape",
        higher_is_better=False,
        input_names=inputs,
        score=score,
        save_torch=lambda m, d: _save_forecast(m, tokenizer, data, d, save_model),
        loss=lambda m, out, batch: m.loss(out, batch),
    )


def _save_forecast(model: Any, tokenizer: Any, data: Any, model_dir: Path, save: Any) -> None:
    """save_model writes <run>/model atomically; here the run is the variant's scratch folder."""
    save(model, tokenizer, data, model_dir.parent)


def _classify_task(run: Path, cfg: RunConfig, metrics: dict[str, Any]) -> TaskModel:
    from greentune.data.text import load_text_splits
    from greentune.evaluate.metrics import classification_metrics
    from greentune.inference import load_run_classifier
    from greentune.models.classifier import TextClassifier, save_classifier
    from greentune.train.classify import predict_labels, tokenize

    splits = load_text_splits(cfg.text, cfg.seed)
    model, tokenizer, labels = load_run_classifier(run)
    model = TextClassifier(merged(model.model, run)).eval()
    batches = {
        k: tokenize(tokenizer, splits.texts[k], splits.labels[k], cfg.text.max_length)
        for k in ("train", "val", "test")
    }
    name = metrics["model"]
    y = splits.labels["test"]

    def score(m: Any) -> tuple[dict[str, Any], pd.DataFrame]:
        pred = predict_labels(m, batches["test"], cfg.eval.batch_size)
        rows = pd.DataFrame(
            {
                "model": name,
                "text": splits.texts["test"],
                "y_true": [labels[i] for i in y],
                "y_pred": [labels[i] for i in pred],
            }
        )
        return classification_metrics(y, pred, len(labels)), rows

    def save(m: Any, model_dir: Path) -> None:
        save_classifier(m, model_dir, tokenizer, labels)

    return TaskModel(
        run=run,
        cfg=cfg,
        kind="classify",
        model_name=name,
        model=model,
        batches=batches,  # type: ignore[arg-type]
        headline="macro_f1",
        higher_is_better=True,
        input_names=("input_ids", "attention_mask"),
        score=score,
        save_torch=save,
        loss=lambda m, out, batch: m.loss(out, batch),
        soft_loss=soft_cross_entropy,
    )


def soft_cross_entropy(
    logits: torch.Tensor, teacher: torch.Tensor, temperature: float = 2.0
) -> torch.Tensor:
    """Hinton et al.'s distillation loss: KL at temperature T, scaled by T^2."""
    t = temperature
    return torch.nn.functional.kl_div(
        torch.log_softmax(logits.float() / t, -1),
        torch.log_softmax(teacher.float() / t, -1),
        log_target=True,
        reduction="batchmean",
    ) * (t * t)


def fresh_copy(model: nn.Module) -> nn.Module:
    """Methods change their own copy: the reference model stays as loaded."""
    return copy.deepcopy(model).eval()


def sample_batch(task: TaskModel, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A fixed batch of test inputs (repeated when the split is smaller than ``size``)."""
    test = task.batches["test"]
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(test), size=size, replace=len(test) < size)
    batch = test.get(np.sort(idx))
    return {k: v for k, v in batch.items() if k in task.input_names}
