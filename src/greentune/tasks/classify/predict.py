"""Class scores for many texts, sharded over processes, padding kept small."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from greentune.config import RunConfig
from greentune.distributed import ranks
from greentune.errors import ConfigError
from greentune.evaluate.metrics import confusion_scores
from greentune.results import Quality
from greentune.tasks.classify.batches import TextBatches

QUALITY = Quality("macro_f1", higher_is_better=True)
"""What ranks classifiers: macro F1 (accuracy alone flatters the majority class)."""

SCORES = ("macro_f1", "accuracy")
"""What ``eval.metric`` may name for a classifier (both higher-is-better)."""


def quality_for(cfg: RunConfig) -> Quality:
    """The run's ranking score: ``eval.metric``, macro-F1 (unset) or accuracy."""
    metric = cfg.eval.metric or QUALITY.metric
    if metric not in SCORES:
        raise ConfigError(
            f"eval.metric={metric} ranks forecasts; a classifier ranks by {' or '.join(SCORES)}"
        )
    return dataclasses.replace(QUALITY, metric=metric)


@torch.no_grad()
def predict_logits(model: Any, batches: TextBatches, batch_size: int) -> np.ndarray:
    """Logits (N, classes) in input order. With several processes each scores its shard and
    the shards are gathered once; texts are sorted by length so padding stays small."""
    model.eval()
    mine = ranks.shard(len(batches))
    order = np.argsort([len(batches.tokens[i]) for i in mine], kind="stable")
    logits: np.ndarray | None = None
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        out = model(batches.get(mine[idx])).float().numpy()
        if logits is None:
            logits = np.empty((len(mine), out.shape[-1]), dtype=np.float32)
        logits[idx] = out
    if logits is None:
        logits = np.zeros((0, 0), dtype=np.float32)
    return ranks.gather_shards(logits, len(batches))


def predict_labels(model: Any, batches: TextBatches, batch_size: int) -> np.ndarray:
    """Class ids (N,) in input order."""
    return predict_logits(model, batches, batch_size).argmax(-1)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


@torch.no_grad()
def validation_scores(
    model: Any, batches: TextBatches, batch_size: int, n_classes: int
) -> dict[str, float]:
    """Validation loss, accuracy and macro F1 in one pass, the loss summed exactly as
    ``mean_loss`` sums it (so ``val_loss`` is the same number either way). With several
    processes each scores its shard and the sums are reduced, so every rank selects the same
    checkpoint (``train.select_on``)."""
    total, n = 0.0, 0
    confusion = np.zeros((n_classes, n_classes), dtype=np.float64)
    mine = ranks.shard(len(batches))
    for start in range(0, len(mine), batch_size):
        idx = np.asarray(mine[start : start + batch_size])
        batch = batches.get(idx)
        out = model(batch)
        total += float(model.loss(out, batch)) * len(idx)
        n += len(idx)
        np.add.at(confusion, (batches.labels[idx], out.argmax(-1).cpu().numpy()), 1)
    sums = ranks.all_sum([total, float(n), *confusion.ravel().tolist()])
    confusion = np.asarray(sums[2:]).reshape(n_classes, n_classes)
    scores = confusion_scores(confusion)
    return {
        "val_loss": sums[0] / max(sums[1], 1.0),
        "val_accuracy": scores["accuracy"],
        "val_macro_f1": scores["macro_f1"],
    }
