"""Training a compressed student: layers chosen, dropped, and trained on the teacher's outputs.

Pruning's recovery fine-tune and distillation are the same loop here: the student learns
``alpha * task loss + (1 - alpha) * distance to the teacher's output`` (Hinton et al. 2015;
DistilBERT's student starts from every other teacher layer, Sanh et al. 2019), with the run's own
training loop, validation and early stopping on the task loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from greentune.compress.task import LoadedRun
from greentune.errors import CompressError
from greentune.tasks.base import mean_loss
from greentune.train.callbacks import EnergyWindows, Window, no_window
from greentune.train.loop import Batches, LoopResult, train

_LAYER_LISTS = ("encoder.layer", "h", "layers", "transformer.h", "model.layers")


def layer_list(model: Any) -> tuple[nn.Module, str, nn.ModuleList]:
    """(owner, attribute, the ModuleList of transformer blocks) of a transformers model."""
    n = int(getattr(model.config, "num_hidden_layers", 0))
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n and name.endswith(_LAYER_LISTS):
            owner_name, _, attr = name.rpartition(".")
            return model.get_submodule(owner_name) if owner_name else model, attr, module
    raise CompressError(f"cannot find the {n} transformer blocks of {type(model).__name__}")


def keep_layers(model: Any, keep: list[int]) -> None:
    """Keep only the blocks ``keep`` (in order); the config says the new depth, so the saved
    folder loads with plain transformers."""
    owner, attr, blocks = layer_list(model)
    if not keep or len(set(keep)) != len(keep) or not all(0 <= i < len(blocks) for i in keep):
        raise CompressError(f"layers to keep {keep} must be distinct indices < {len(blocks)}")
    kept = nn.ModuleList([blocks[i] for i in sorted(keep)])
    for new_index, block in enumerate(kept):
        for module in block.modules():  # caches index blocks by position
            if hasattr(module, "layer_idx"):
                setattr(module, "layer_idx", new_index)  # noqa: B010
    setattr(owner, attr, kept)
    model.config.num_hidden_layers = len(kept)


def depth(task: LoadedRun, model: nn.Module) -> int:
    return len(layer_list(task.inner(model))[2])


def val_loss(task: LoadedRun, model: Any) -> float:
    return mean_loss(model, task.batches["val"], task.cfg.eval.batch_size)


def greedy_layer_choice(task: LoadedRun, model: nn.Module, keep: int) -> tuple[list[int], list]:
    """Drop, one at a time, the block whose removal hurts validation loss least."""
    import copy

    kept = list(range(depth(task, model)))
    trail: list[dict[str, Any]] = []
    while len(kept) > keep:
        losses = {}
        for candidate in kept:
            trial = copy.deepcopy(model).eval()
            keep_layers(task.inner(trial), [i for i in kept if i != candidate])
            losses[candidate] = val_loss(task, trial)
        drop = min(losses, key=losses.__getitem__)
        kept.remove(drop)
        trail.append({"dropped": drop, "val_loss": losses[drop]})
    return kept, trail


@dataclasses.dataclass
class WithTeacher:
    """Training batches plus the teacher's output for each window, computed once."""

    base: Batches
    teacher: torch.Tensor

    def __len__(self) -> int:
        return len(self.base)

    def get(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        return {**self.base.get(idx), "teacher": self.teacher[torch.from_numpy(idx)]}


@torch.no_grad()
def teacher_outputs(teacher: Any, batches: Batches, batch_size: int = 64) -> torch.Tensor:
    outs = [
        teacher(batches.get(np.arange(s, min(s + batch_size, len(batches))))).float()
        for s in range(0, len(batches), batch_size)
    ]
    return torch.cat(outs)


class Student(nn.Module):
    """The loop's model: the student's forward, a loss that mixes task and teacher."""

    def __init__(
        self,
        student: nn.Module,
        task_loss: Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor],
        soft_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        alpha: float,
    ) -> None:
        super().__init__()
        self.student = student
        self.task_loss, self.soft_loss, self.alpha = task_loss, soft_loss, alpha

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.student(batch)

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hard = self.task_loss(out, batch)
        return self.alpha * hard + (1 - self.alpha) * self.soft_loss(out, batch["teacher"])


def train_student(
    task: LoadedRun,
    student: nn.Module,
    epochs: int,
    lr: float,
    alpha: float,
    window: Window = no_window,
) -> LoopResult:
    """Every weight of the student trains (LoRA is merged by now), except a forecaster's
    ridge-initialised skip weights, which stay frozen as in the run itself."""
    for name, p in student.named_parameters():
        p.requires_grad_(not name.startswith("skip.weight"))
    with window("teacher"):
        soft = teacher_outputs(task.model, task.batches["train"])
    # the student is kept at its lowest distillation validation loss, whatever chose the teacher
    # one rate for every weight, as compress documents: the student is not the run's stack
    cfg = dataclasses.replace(
        task.cfg.train,
        epochs=epochs,
        lr=lr,
        max_steps=None,
        select_on="loss",
        layer_lr_decay=1.0,
    )
    wrapped = Student(student, lambda out, b: task.loss(student, out, b), task.soft_loss, alpha)
    result = train(
        wrapped,
        WithTeacher(task.batches["train"], soft),
        cfg,
        task.cfg.seed,
        validate=lambda: val_loss(task, student),
        callbacks=[EnergyWindows(window)],
    )
    student.eval()
    return result
