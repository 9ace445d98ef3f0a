"""The method registry and what a method is given; methods register where they are defined
(``methods.py``: the peft-based ones, full, frozen; ``bottleneck.py``: adapter)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from greentune.config import PeftConfig
from greentune.registry import Registry


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


def train_only(model: nn.Module, keep: Callable[[str], bool]) -> nn.Module:
    """Freeze every parameter of ``model`` but those whose name ``keep`` accepts."""
    for name, p in model.named_parameters():
        p.requires_grad_(keep(name))
    return model
