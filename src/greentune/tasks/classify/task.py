"""The classification task: what is particular to classification runs once they exist."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd
import torch

from greentune.config import RunConfig
from greentune.data.text import load_text_splits
from greentune.ensemble_file import is_ensemble_of_runs
from greentune.evaluate.metrics import classification_metrics
from greentune.evaluate.table import classification_table
from greentune.models.classifier import TextClassifier
from greentune.privacy.report import privacy_line, row_label
from greentune.results import ModelResult, Quality, RunMetrics
from greentune.rundir import RunDir
from greentune.tasks.base import LoadedRun, Predictor
from greentune.tasks.classify.artifacts import save_model
from greentune.tasks.classify.ensemble_runs import (
    ENSEMBLE_KINDS,
    ensemble_runs,
    merge_probabilities,
)
from greentune.tasks.classify.predict import QUALITY, quality_for
from greentune.tasks.classify.predictor import ClassifyPredictor
from greentune.tasks.classify.remedies import classify_remedies
from greentune.tasks.ensemble_predictor import RunsPredictor, refuse_ensemble
from greentune.train.callbacks import Callback
from greentune.train.defaults import TrainDefault, with_train_defaults
from greentune.tuning.methods import merge_adapter


class ClassifyTask:
    name = "classify"
    quality = QUALITY
    privacy_unit = "text"
    audit_held_out: tuple[str, ...] = ("test",)
    federated = False
    selection_scores: tuple[str, ...] = ("loss", "accuracy", "macro_f1")
    train_defaults: Mapping[str, TrainDefault] = MappingProxyType({})
    """None measured yet: every method gets ``train.defaults.GENERIC`` (docs/training.md)."""

    def quality_of(self, cfg: RunConfig) -> Quality:
        return quality_for(cfg)

    def resolve_config(self, cfg: RunConfig) -> RunConfig:
        self.quality_of(cfg)  # a forecast's score is refused before any data is read
        return with_train_defaults(cfg, self.train_defaults, self.name)

    def private_config(self, cfg: RunConfig) -> RunConfig:
        return cfg  # the classifier fits nothing on the texts outside DP-SGD

    def privacy_notes(self, cfg: RunConfig) -> list[str]:
        return []

    def train_callbacks(self, cfg: RunConfig) -> list[Callback]:
        return classify_remedies(cfg)

    def load_predictor(self, run: RunDir) -> Predictor:
        if is_ensemble_of_runs(run):
            return RunsPredictor.load(run, merge_probabilities)
        return ClassifyPredictor.load(run)

    def evaluate(self, run: RunDir, predictor: Predictor) -> RunMetrics:
        """The saved model on the run's test texts again; baselines keep their scores."""
        refuse_ensemble(predictor)
        assert isinstance(predictor, ClassifyPredictor)
        cfg = run.config
        metrics = run.metrics
        splits = load_text_splits(cfg.text, cfg.seed)
        y = splits.labels["test"]
        pred = predictor.logits(predictor.batches(splits.texts["test"], y)).argmax(-1)
        fresh = ModelResult.from_dict(classification_metrics(y, pred, len(predictor.labels)))
        metrics.result.scores.update(fresh.scores)
        metrics.result.confusion = fresh.confusion
        run.write_metrics(metrics)
        return metrics

    def load_for_compression(self, run: RunDir) -> LoadedRun:
        cfg = run.config
        metrics = run.metrics
        predictor = ClassifyPredictor.load(run)
        model = TextClassifier(merge_adapter(predictor.model.model, run.path)).eval()
        splits = load_text_splits(cfg.text, cfg.seed)
        batches = {k: predictor.batches(splits.texts[k], splits.labels[k]) for k in splits.texts}
        labels, name, y = predictor.labels, metrics.model, splits.labels["test"]

        def score(m: Any) -> tuple[ModelResult, pd.DataFrame]:
            pred = predictor.with_model(m).logits(batches["test"]).argmax(-1)
            rows = pd.DataFrame(
                {
                    "model": name,
                    "text": splits.texts["test"],
                    "y_true": [labels[i] for i in y],
                    "y_pred": [labels[i] for i in pred],
                }
            )
            return ModelResult.from_dict(classification_metrics(y, pred, len(labels))), rows

        return LoadedRun(
            run=run,
            cfg=cfg,
            task=self.name,
            model_name=name,
            model=model,
            batches=batches,  # type: ignore[arg-type]
            quality=self.quality_of(cfg),
            input_names=("input_ids", "attention_mask"),
            inner_attr="model",
            score=score,
            save_torch=lambda m, d: save_model(m, predictor.tokenizer, labels, d),
            soft_loss=soft_cross_entropy,
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
        line = privacy_line(metrics.privacy)
        return [classification_table(results, "test split"), *([f"  {line}"] if line else [])]


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
