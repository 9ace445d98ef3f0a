"""PEFT method registry: config -> the backbone with the right parameters trainable.

``lora``, ``adalora``, ``ia3`` and ``ln`` go through the ``peft`` library (so adapters save and
load with ``PeftModel``); ``full`` trains everything and ``frozen`` trains only what sits outside
the backbone (the encoder and head, or the classifier).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from greentune.config import PeftConfig
from greentune.errors import ConfigError
from greentune.registry import Registry
from greentune.train.callbacks import Callback, LoopState, SetupContext


@dataclass(frozen=True)
class MethodContext:
    """What a method needs beyond its config."""

    total_steps: int
    task_type: str | None = None
    """'SEQ_CLS' for the classifier (peft then keeps the classifier trainable), else None."""
    head_modules: tuple[str, ...] = ()
    """Modules outside the adapters that must still train (the classifier's head)."""


Method = Callable[[nn.Module, PeftConfig, MethodContext], nn.Module]
METHODS: Registry[Method] = Registry("peft.method")

_LN_DEFAULTS = {"bert": ["LayerNorm"], "gpt2": ["ln_1", "ln_2", "ln_f"]}


def apply_method(model: nn.Module, cfg: PeftConfig, ctx: MethodContext) -> nn.Module:
    return METHODS.get(cfg.method)(model, cfg, ctx)


def _targets(cfg: PeftConfig) -> list[str] | None:
    return list(cfg.target_modules) if cfg.target_modules else None


def _peft(model: nn.Module, peft_config: object) -> nn.Module:
    from peft import get_peft_model

    try:
        return get_peft_model(model, peft_config)  # type: ignore[call-overload]
    except ValueError as exc:
        raise ConfigError(
            f"peft cannot adapt this backbone ({exc}); set peft.target_modules to module names "
            "of the backbone, e.g. [query, value] for BERT or [c_attn] for GPT-2"
        ) from None


@METHODS.register("lora")
def lora(model: nn.Module, cfg: PeftConfig, ctx: MethodContext) -> nn.Module:
    from peft import LoraConfig

    return _peft(
        model,
        LoraConfig(
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=_targets(cfg),
            task_type=ctx.task_type,
        ),
    )


@METHODS.register("adalora")
def adalora(model: nn.Module, cfg: PeftConfig, ctx: MethodContext) -> nn.Module:
    """AdaLoRA prunes ranks on a schedule; the loop calls ``update_and_allocate`` each step."""
    from peft import AdaLoraConfig

    # The allocator scores ranks on the steps before total - tfinal and prunes to the budget at
    # total - tfinal. A forecaster's head starts at zero, so its first step sends no gradient
    # into the backbone: with 3 steps that first step was the only one scored, every rank
    # scored 0 and all of them were pruned (an empty adapter). 4 scores step 2 as well.
    total = max(ctx.total_steps, 4)
    return _peft(
        model,
        AdaLoraConfig(
            init_r=cfg.r,
            target_r=cfg.target_r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=_targets(cfg),
            task_type=ctx.task_type,
            total_step=total,
            tinit=max(1, total // 10),
            tfinal=max(1, total // 5),
            deltaT=max(1, total // 50),
        ),
    )


@METHODS.register("ia3")
def ia3(model: nn.Module, cfg: PeftConfig, ctx: MethodContext) -> nn.Module:
    from peft import IA3Config

    targets = _targets(cfg)
    return _peft(
        model,
        IA3Config(
            target_modules=targets,
            task_type=ctx.task_type,
            feedforward_modules=[] if targets else None,
        ),
    )


@METHODS.register("ln")
def ln_tuning(model: nn.Module, cfg: PeftConfig, ctx: MethodContext) -> nn.Module:
    """LayerNorm tuning (GPT4TS trains only the LayerNorms of the language model)."""
    from peft import LNTuningConfig

    targets = _targets(cfg)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if targets is None:
        targets = _LN_DEFAULTS.get(str(model_type))
    if targets is None:
        targets = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
        )
    return _peft(model, LNTuningConfig(target_modules=targets, task_type=ctx.task_type))


@METHODS.register("full")
def full(model: nn.Module, cfg: PeftConfig, ctx: MethodContext) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


@METHODS.register("frozen")
def frozen(model: nn.Module, cfg: PeftConfig, ctx: MethodContext) -> nn.Module:
    for name, p in model.named_parameters():
        p.requires_grad_(any(name.startswith(h) for h in ctx.head_modules))
    return model


def save_with_adapter(model: Any, directory: Path, base_name: str = "backbone") -> Any:
    """Save a (possibly PEFT-wrapped) model as ``adapter/`` + ``<base_name>/``; return the base.

    ``unload()`` on a copy strips the adapter layers and gives back the untouched base weights,
    so the folder loads with ``PeftModel.from_pretrained(AutoModel...(base), adapter)``.
    """
    if hasattr(model, "peft_config"):
        model.save_pretrained(directory / "adapter")
        base = copy.deepcopy(model).unload()
    else:
        base = model
    base.save_pretrained(directory / base_name)
    return base


def merge_adapter(model: Any, where: Path) -> Any:
    """A PEFT-wrapped model with its adapter folded into the weights; plain models unchanged.
    ``where`` (the run) is named in the error for methods that cannot be merged."""
    if not hasattr(model, "peft_config"):
        return model
    if not hasattr(model, "merge_and_unload"):
        raise ConfigError(
            f"{where}: its PEFT method cannot be merged into the weights (prompt/prefix "
            "tuning); use a run trained with lora, adalora, ia3, ln or full"
        )
    return model.merge_and_unload()


class AdaLoraAllocator(Callback):
    """AdaLoRA prunes ranks on a schedule: after each optimizer step, before the gradients are
    cleared, ``update_and_allocate`` reads them. It needs whole gradients, so FSDP is refused."""

    def __init__(self, update: Callable[[int], None]) -> None:
        self.update = update

    def on_setup(self, ctx: SetupContext) -> None:
        if ctx.sharded:
            raise ConfigError(
                "train.distributed_strategy=fsdp cannot run peft.method=adalora (its rank "
                "allocator reads whole gradients after each step); use ddp"
            )

    def on_step_end(self, state: LoopState, loss: float) -> None:
        self.update(state.step)


def method_callbacks(model: nn.Module) -> list[Callback]:
    """The training callbacks a model's PEFT method needs (AdaLoRA's rank allocation)."""
    base = getattr(model, "base_model", None)
    update = getattr(base, "update_and_allocate", None)
    return [AdaLoraAllocator(update)] if update is not None else []
