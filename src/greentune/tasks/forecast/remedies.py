"""The forecaster's remedies against overfitting: series augmentation and adversarial
training on the patch embeddings (``augment``, ``regularize`` in the config)."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch

from greentune.augment.callback import Augmentation
from greentune.augment.series import augment_series
from greentune.config import SERIES_AUGMENTS, TEXT_AUGMENTS, AugmentConfig, RunConfig
from greentune.errors import ConfigError
from greentune.train.callbacks import Callback
from greentune.train.regularize import regularizers, task_augments


def forecast_remedies(cfg: RunConfig) -> list[Callback]:
    aug = cfg.augment
    series = task_augments(cfg, "forecast", SERIES_AUGMENTS, TEXT_AUGMENTS, ("words", "series"))
    out: list[Callback] = []
    if series:
        if cfg.model.encoder != "patch":
            raise ConfigError(
                f"augment.{series[0]} changes the numbers of a window, and model.encoder=text "
                "reads windows as prompts written once before training: use model.encoder=patch"
            )
        out.append(Augmentation(partial(_augment, aug), cfg.seed, aug.settings(series)))
    return [*out, *regularizers(cfg.regularize, classifier=False, dropout=cfg.model.dropout)]


def _augment(
    cfg: AugmentConfig, batches: Any, idx: np.ndarray, rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    batch = batches.get(idx)
    return augment_series(batch, cfg, int(batch["y"].shape[-1]), rng)
