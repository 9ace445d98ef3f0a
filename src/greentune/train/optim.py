"""Optimisers and learning-rate schedules, picked by name."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_scheduler
from transformers.optimization import Adafactor

from greentune.config import TrainConfig
from greentune.registry import Registry
from greentune.train.defaults import peak_lr

OptimizerFactory = Callable[[list[dict], TrainConfig], Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("train.optimizer")


@OPTIMIZERS.register("adamw")
def _adamw(groups: list[dict], cfg: TrainConfig) -> Optimizer:
    return torch.optim.AdamW(groups, lr=peak_lr(cfg))


@OPTIMIZERS.register("sgd")
def _sgd(groups: list[dict], cfg: TrainConfig) -> Optimizer:
    return torch.optim.SGD(groups, lr=peak_lr(cfg), momentum=0.9)


@OPTIMIZERS.register("adafactor")
def _adafactor(groups: list[dict], cfg: TrainConfig) -> Optimizer:
    # A fixed lr (no relative step) so that warmup and decay come from our scheduler.
    return Adafactor(groups, lr=peak_lr(cfg), scale_parameter=False, relative_step=False)


def build_optimizer(
    named_params: Iterable[tuple[str, torch.nn.Parameter]], cfg: TrainConfig
) -> Optimizer:
    """Weight decay on matrices only: biases and LayerNorm weights are not decayed."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return OPTIMIZERS.get(cfg.optimizer)([g for g in groups if g["params"]], cfg)


def build_scheduler(optimizer: Optimizer, cfg: TrainConfig, total_steps: int) -> LambdaLR:
    warmup = round(cfg.warmup_ratio * total_steps)
    name = "constant_with_warmup" if cfg.schedule == "constant" else cfg.schedule
    return get_scheduler(
        name, optimizer, num_warmup_steps=warmup, num_training_steps=max(total_steps, 1)
    )
