"""What every task provides (``Task``), its registry, and what a loaded run offers:
``Predictor`` (DataFrame in, DataFrame out) and ``LoadedRun`` (the model with its data, for
compression).

The built-in tasks register themselves when ``greentune.tasks`` is imported, which Python does
before it runs this module; a task defined elsewhere registers with ``TASKS.add(name, task)``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from greentune.config import RunConfig
from greentune.distributed import ranks
from greentune.ensemble_file import is_ensemble_of_runs, refuse_variant
from greentune.errors import CheckpointError, ConfigError
from greentune.io import files_digest
from greentune.registry import Registry
from greentune.results import ModelResult, Quality, RunMetrics
from greentune.rundir import RunDir
from greentune.train.callbacks import Callback
from greentune.train.defaults import TrainDefault
from greentune.train.loop import Batches, TrainableModel

__all__ = [
    "TASKS",
    "LoadedRun",
    "Predictor",
    "Prepared",
    "Task",
    "check_select_on",
    "mean_loss",
]


@dataclass
class Prepared:
    """One request's inputs, checked and ready for the network: what ``Predictor.prepare``
    returns and ``Predictor.predict_prepared`` runs, many requests in one forward pass."""

    predictor: Predictor
    """The model that checked the inputs (and must run them: a reload may swap models)."""
    size: int
    """Predictions it asks for: forecast windows or texts."""
    payload: Any


class Predictor(ABC):
    """A finished run's model, loaded once: ``predict`` maps a DataFrame to a DataFrame.

    ``Predictor.from_run(path)`` picks the task's predictor (forecast: quantile forecasts with
    timestamps; classify: labels and class probabilities) and the variant: None or ``"fp32"``
    for the run's own model, else a compressed variant by name (``"int8-dynamic"``,
    ``"onnx-int8"``, the variant run's folder name) or path.
    """

    task: str
    run: RunDir | None
    variant: str
    """fp32 for a trained model; the compression method of a variant."""

    @classmethod
    def from_run(
        cls, path: str | os.PathLike[str], variant: str | None = None, row: str | None = None
    ) -> Predictor:
        """``row``: a forecasting run's kept row to forecast with instead of its network (a
        baseline or an ensemble by its name in the run's table, or ``recommended``)."""
        run = RunDir.open(path)
        run.check_finished("load its model")
        if variant is not None and is_ensemble_of_runs(run):  # no extra read for the usual load
            refuse_variant(run, variant)
        run = run.variant(variant)
        predictor = TASKS.get(run.config.task).load_predictor(run)
        if not isinstance(predictor, cls) and predictor.task == getattr(cls, "task", None):
            raise CheckpointError(
                f"{run.path} loads as a {type(predictor).__name__} (an ensemble of runs), not a "
                f"{cls.__name__}: load it with Predictor.from_run"
            )
        if not isinstance(predictor, cls):
            raise CheckpointError(
                f"{run.path} is a {predictor.task} run; {cls.__name__} loads "
                f"{getattr(cls, 'task', 'other')} runs"
            )
        return predictor if row is None else predictor.with_row(row)

    def with_row(self, row: str) -> Predictor:
        """This run forecasting with its kept row ``row``; only forecasting runs keep rows
        besides the network."""
        raise ConfigError(
            f"row {row!r}: a {self.task} run predicts with its network only; kept rows "
            "(baselines, ensembles) are a forecasting run's"
        )

    def predict(self, frame: Any, **options: Any) -> pd.DataFrame:
        """Predictions for the rows (or windows) of ``frame``; errors name the column and row."""
        return self.predict_prepared([self.prepare(frame, **options)])[0]

    @abstractmethod
    def prepare(self, frame: Any, **options: Any) -> Prepared:
        """Check and encode one input (``predict``'s arguments) without running the network;
        bad input raises DataError here, before it can spoil a shared batch."""

    @abstractmethod
    def predict_prepared(self, items: list[Prepared]) -> list[pd.DataFrame]:
        """``predict``'s result for each item, computed in one pass over all of them (the
        serving batcher's forward pass)."""

    def prepare_many(self, views: Sequence[Predictor], frame: Any, **options: Any) -> Prepared:
        """``prepare`` once for several rows of this loaded run (``views``: this predictor and
        its ``with_row`` views) that an ensemble of runs reads together. Here each on its own;
        a forecasting run shares its windows among them."""
        parts = [v.prepare(frame, **options) for v in views]
        return Prepared(self, max(p.size for p in parts), parts)

    def predict_many(
        self, views: Sequence[Predictor], items: list[Prepared]
    ) -> list[list[pd.DataFrame]]:
        """Per item of ``prepare_many``, each view's predictions. Here each on its own; a
        forecasting run runs its network and each kept baseline once for all of them."""
        per_view = [
            v.predict_prepared([item.payload[i] for item in items]) for i, v in enumerate(views)
        ]
        return [[frames[k] for frames in per_view] for k in range(len(items))]

    def version(self) -> str:
        """12 hex digits identifying the loaded model: a SHA-256 over its ``model/`` folder's
        files (names and bytes), so the same weights give the same version on every replica."""
        if self.run is None:
            raise CheckpointError("a predictor made without its run has no saved files to version")
        return files_digest([(self.run.model_dir, "")])

    @property
    def info(self) -> dict[str, Any]:
        """What served predictions should carry: run, task and variant."""
        return {
            "run": str(self.run.path) if self.run else None,
            "task": self.task,
            "variant": self.variant,
        }


Score = Callable[[Any], tuple[ModelResult, pd.DataFrame]]
"""model -> (its test result, prediction rows in predictions.parquet's layout)."""


def _mse(out: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(out, teacher)


@dataclass
class LoadedRun:
    """A finished run's fp32 torch model (adapter merged) with its data: what compression and
    other model-to-model transforms need, for any task."""

    run: RunDir
    cfg: RunConfig
    task: str
    model_name: str
    """The model's row in metrics.json."""
    model: nn.Module
    batches: dict[str, Batches]
    """train / val / test batches in the run's own split."""
    quality: Quality
    input_names: tuple[str, ...]
    """The batch keys the network reads (the inputs of an exported graph)."""
    inner_attr: str
    """Attribute of the task model that holds the transformers model (its layers)."""
    score: Score
    save_torch: Callable[[Any, Path], None]
    """Write a complete model/ folder in the run layout (loadable by ``Predictor``)."""
    soft_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(default=_mse)
    """How far a student's output is from its teacher's (distillation and recovery)."""
    by_target: Callable[[pd.DataFrame], dict[str, dict[str, float]] | None] | None = None
    """A variant's scores per target from its predictions frame (``score``'s second value),
    for runs over several targets (metrics.json's ``by_target``); None: one target."""

    def inner(self, model: Any) -> Any:
        return getattr(model, self.inner_attr)

    def loss(self, model: Any, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model.loss(out, batch)


class Task(Protocol):
    """A kind of run (forecast, classify). Its recipe is ``greentune.train.recipes``' entry of
    the same name."""

    name: str
    quality: Quality
    privacy_unit: str
    """What one sample is under DP ('training window', 'text'): what the guarantee protects."""
    audit_held_out: tuple[str, ...]
    """Splits the model never trained on: the membership audit's non-members."""
    federated: bool
    """``greentune federate`` can train it (clients' series through
    ``greentune.privacy.federated``)."""
    selection_scores: tuple[str, ...]
    """Validation scores that may choose the kept model (``train.select_on``)."""

    train_defaults: Mapping[str, TrainDefault]
    """``auto`` train.lr and train.patience per PEFT method (``greentune.train.defaults``)."""

    def quality_of(self, cfg: RunConfig) -> Quality:
        """The score a run of ``cfg`` ranks its rows by (``quality`` unless the config chooses,
        as a forecast's ``eval.metric`` does)."""
        ...

    def resolve_config(self, cfg: RunConfig) -> RunConfig:
        """The config with the data source's and the training defaults written in (what
        config.yaml records)."""
        ...

    def private_config(self, cfg: RunConfig) -> RunConfig:
        """Under privacy.dp: what this task fits on training data outside the network switched
        to a data-independent choice (or refused)."""
        ...

    def privacy_notes(self, cfg: RunConfig) -> list[str]:
        """What ``private_config`` changed, in words."""
        ...

    def train_callbacks(self, cfg: RunConfig) -> list[Callback]:
        """Callbacks for the training of the run's own network: its remedies against
        overfitting (``augment``, ``regularize``); a ConfigError for what this task cannot
        take. Called before any data is read."""
        ...

    def load_predictor(self, run: RunDir) -> Predictor:
        """The run's model (or the variant the run holds), loaded once."""
        ...

    def evaluate(self, run: RunDir, predictor: Predictor) -> RunMetrics:
        """Score ``predictor`` on the run's test split again and write metrics.json."""
        ...

    def load_for_compression(self, run: RunDir) -> LoadedRun: ...

    def ensemble(
        self,
        specs: list[str],
        out: str | Path,
        kinds: tuple[str, ...] | None,
        target: str | None,
        log: Callable[[str], None],
    ) -> RunDir:
        """``greentune ensemble``: the finished runs ``specs`` of this task combined into the
        new run directory ``out``; ``kinds`` None: the task's default combinations."""
        ...

    def render(self, metrics: RunMetrics, quality: Quality) -> list[Any]:
        """What the CLI prints about a finished run: tables (rich) and sentences, its rows
        ranked by ``quality`` (``quality_of`` the run's config)."""
        ...


TASKS: Registry[Task] = Registry("task")


def check_select_on(task: Task, cfg: RunConfig) -> None:
    """Refuse a ``train.select_on`` the task does not score, before anything is written."""
    if cfg.train.select_on not in task.selection_scores:
        raise ConfigError(
            f"train.select_on={cfg.train.select_on} is not a validation score of "
            f"task={task.name}, which chooses its kept model on "
            f"{' or '.join(task.selection_scores)}: set train.select_on=loss"
        )


@torch.no_grad()
def mean_loss(model: TrainableModel, batches: Batches, batch_size: int) -> float:
    """Mean loss over every sample of ``batches``. With several processes each scores its
    shard and the sums are reduced, so every rank takes the same early-stopping decision."""
    total, n = 0.0, 0
    mine = ranks.shard(len(batches))
    for start in range(0, len(mine), batch_size):
        idx = mine[start : start + batch_size]
        batch = batches.get(np.asarray(idx))
        total += float(model.loss(model(batch), batch)) * len(idx)
        n += len(idx)
    total, n_all = ranks.all_sum([total, float(n)])
    return total / max(n_all, 1.0)
