"""Optimisers and learning-rate schedules, picked by name."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_scheduler
from transformers.optimization import Adafactor

from greentune.config import RunConfig, TrainConfig
from greentune.errors import ConfigError
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


_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
"""A transformer block's index in a parameter name: BERT's ``encoder.layer.3.``, GPT-2's
``h.3.``, and the same under a PEFT wrapper (``...layer.3.attention...lora_A...``)."""
_EMBEDDINGS = re.compile(
    r"(?:^|\.)(?:embeddings|word_embeddings|wte|wpe|embed_in|embed_tokens|embed_positions)\."
)
"""The pretrained input embeddings (word, position, token type, their LayerNorm)."""
OUTSIDE_THE_STACK = ("frozen", "prompt", "prefix")
"""PEFT methods that train nothing inside the pretrained stack (a head, virtual tokens)."""


def layer_depths(names: Iterable[str]) -> dict[str, int | None]:
    """Each name's depth in the pretrained stack: 0 for the input embeddings, ``i + 1`` for
    block ``i``, None for everything else (heads, poolers, the forecaster's patch projections
    and skip path, prompt tokens): parameters that are new or sit above the stack. Weights a
    PEFT method adds inside block ``i`` (LoRA, IA3, adapters) are at block ``i``'s depth."""
    depths: dict[str, int | None] = {}
    for name in names:
        layer = _LAYER.search(name)
        if layer is not None:
            depths[name] = int(layer.group(1)) + 1
        elif _EMBEDDINGS.search(name) is not None:
            depths[name] = 0
        else:
            depths[name] = None
    return depths


def layer_lr_scales(names: Iterable[str], decay: float) -> dict[str, float]:
    """Layer-wise learning-rate decay (as BEiT's; ELECTRA's puts the head one step higher):
    with ``L`` blocks, block ``i`` trains at ``decay ** (L - i)`` of the peak rate, the
    embeddings at ``decay ** (L + 1)`` and everything outside the stack at the peak rate.
    ``names`` are all the model's parameters, so the top block is the model's, trained or not.
    A model with blocks in two stacks (an encoder and a decoder) is refused: one depth
    ladder would put both stacks' block ``i`` at one rate."""
    names = list(names)
    if decay == 1:
        return dict.fromkeys(names, 1.0)
    stacks = {name[: m.start()] for name in names if (m := _LAYER.search(name)) is not None}
    if len(stacks) > 1:
        raise ConfigError(
            f"train.layer_lr_decay={decay:g}: the model has blocks in {len(stacks)} stacks "
            f"({', '.join(sorted(stacks)[:3])}), and one ladder of rates cannot order them; "
            "set train.layer_lr_decay=1"
        )
    depths = layer_depths(names)
    top = max((d for d in depths.values() if d is not None), default=0) + 1
    return {n: 1.0 if d is None else decay ** (top - d) for n, d in depths.items()}


def check_layer_lr_decay(cfg: RunConfig) -> None:
    """Refuse, before a run starts, a decay with a PEFT method that trains nothing in the
    stack (``build_optimizer`` refuses any other such model when it is built)."""
    decay = cfg.train.layer_lr_decay
    if decay < 1 and cfg.peft.method in OUTSIDE_THE_STACK:
        raise ConfigError(
            f"train.layer_lr_decay={decay:g} with peft.method={cfg.peft.method}: the method "
            "trains nothing inside the pretrained stack, so there is nothing to decay; set "
            "train.layer_lr_decay=1, or use a method that trains the blocks (full, lora, ...)"
        )


def build_optimizer(
    named_params: Iterable[tuple[str, torch.nn.Parameter]], cfg: TrainConfig
) -> Optimizer:
    """Weight decay on matrices only: biases and LayerNorm weights are not decayed. With
    ``cfg.layer_lr_decay`` < 1 each depth of the pretrained stack gets its own rate
    (``layer_lr_scales``); the peak rate's groups come first, so group 0 logs the peak."""
    named = list(named_params)
    scales = layer_lr_scales([n for n, _ in named], cfg.layer_lr_decay)
    trainable = [(n, p) for n, p in named if p.requires_grad]
    if cfg.layer_lr_decay < 1 and all(scales[n] == 1.0 for n, _ in trainable):
        raise ConfigError(
            f"train.layer_lr_decay={cfg.layer_lr_decay:g}: no trainable parameter lies in the "
            "pretrained stack (its embeddings or blocks named like encoder.layer.N or h.N), so "
            "there is nothing to decay; train the stack (e.g. peft.method=full or lora) or set "
            "train.layer_lr_decay=1"
        )
    lr = peak_lr(cfg)
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, p in trainable:
        decayed = not (p.ndim < 2 or "norm" in name.lower())
        groups.setdefault((scales[name], decayed), []).append(p)
    ordered = sorted(groups.items(), key=lambda kv: (-kv[0][0], not kv[0][1]))
    param_groups = [
        {
            "params": params,
            "weight_decay": cfg.weight_decay if decayed else 0.0,
            "lr": lr * scale,
        }
        for (scale, decayed), params in ordered
    ]
    return OPTIMIZERS.get(cfg.optimizer)(param_groups, cfg)


def build_scheduler(optimizer: Optimizer, cfg: TrainConfig, total_steps: int) -> LambdaLR:
    warmup = round(cfg.warmup_ratio * total_steps)
    name = "constant_with_warmup" if cfg.schedule == "constant" else cfg.schedule
    return get_scheduler(
        name, optimizer, num_warmup_steps=warmup, num_training_steps=max(total_steps, 1)
    )
