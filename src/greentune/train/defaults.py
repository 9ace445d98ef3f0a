"""``train.lr`` and ``train.patience`` when the config says ``auto``: each task's own value for
its PEFT method, with where the value was chosen.

A task lists its defaults (``Task.train_defaults``) and writes them into the config in its
``resolve_config``, so that config.yaml holds the numbers a run trained with and
``train.chosen`` says why. Code that trains without a task (the loop called directly, a
federated round) reads ``auto`` as ``GENERIC``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from greentune.config import RunConfig, TrainConfig


@dataclass(frozen=True)
class TrainDefault:
    lr: float
    patience: int | None
    basis: str
    """Where the values come from, in words (logged and written in ``train.chosen``)."""


GENERIC = TrainDefault(3e-4, 2, "the project's starting values, not tuned for this task and method")


def with_train_defaults(cfg: RunConfig, table: Mapping[str, TrainDefault], task: str) -> RunConfig:
    """``cfg`` with an ``auto`` lr or patience replaced by ``table``'s entry for its PEFT method
    (``GENERIC`` when the method has none); settings the user gave are kept."""
    train = cfg.train
    if train.lr != "auto" and train.patience != "auto":
        return cfg
    default = table.get(cfg.peft.method, GENERIC)
    changes: dict[str, object] = {}
    said = []
    if train.lr == "auto":
        changes["lr"] = default.lr
        said.append(f"train.lr {default.lr:g}")
    if train.patience == "auto":
        changes["patience"] = default.patience
        said.append(f"train.patience {default.patience}")
    method = cfg.peft.method
    note = f"{' and '.join(said)}: the {task} default for peft.method={method} ({default.basis})"
    train = dataclasses.replace(train, chosen=(*train.chosen, note), **changes)  # type: ignore[arg-type]
    return dataclasses.replace(cfg, train=train)


def peak_lr(train: TrainConfig) -> float:
    """The learning rate as a number (``auto`` read as ``GENERIC``)."""
    return GENERIC.lr if train.lr == "auto" else train.lr


def stop_patience(train: TrainConfig) -> int | None:
    """Early stopping's patience as a number or None (``auto`` read as ``GENERIC``)."""
    return GENERIC.patience if train.patience == "auto" else train.patience
