"""An exponential moving average of the trainable weights (Polyak averaging), as a callback.

After every optimizer step the average moves toward the live weights by ``1 - decay``; the
decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (TensorFlow's
``ExponentialMovingAverage`` with ``num_updates``), so the start does not linger in the average
for thousands of steps. Each validation scores the average: the loop's ``validate-N`` phase
swaps it into the model, and the loop takes its best-checkpoint snapshot inside that phase, so
the kept model, the saved model and the test scores are the average's. Training itself always
steps the live weights, and checkpoints keep both (the average in the callback's state), so a
resumed run continues the same average.

Why not ``torch.optim.swa_utils.AveragedModel``: it deep-copies the whole model and averages
the frozen tensors too (the 22 M frozen weights of a LoRA fine-tune at every step), and it
offers no swap for validation; here only the trainable tensors are kept, as fp32 copies.

Under DP-SGD the average is post-processing of the private iterates (no privacy cost; De et
al. 2022 average DP-SGD's weights the same way).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from greentune.config import RunConfig
from greentune.distributed import ranks
from greentune.errors import ConfigError, TrainingError
from greentune.train.callbacks import Callback, SetupContext
from greentune.train.state import LoopState

WARMUP_UPDATES = 10
_FSDP = (
    "train.ema_decay with train.distributed_strategy=fsdp: each process holds only shards of "
    "the weights to average; use distributed_strategy=ddp or ema_decay=0"
)


def effective_decay(decay: float, updates: int) -> float:
    """The decay of the ``updates``-th update (from 1): warmed up, at most ``decay``."""
    return min(decay, (1 + updates) / (WARMUP_UPDATES + updates))


class WeightAverage(Callback):
    """Keeps the average of the trainable tensors; validation (and so the kept model) sees it."""

    state_key = "weight_average"

    def __init__(self, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in (0, 1) to average, got {decay}")
        self.decay = decay
        self.updates = 0
        self.params: list[nn.Parameter] = []
        self.average: list[torch.Tensor] = []
        self._restored: list[torch.Tensor] | None = None

    def __str__(self) -> str:
        return f"an average of the trainable weights (train.ema_decay={self.decay:g})"

    def state_dict(self) -> dict[str, Any]:
        # no copy: the loop saves the checkpoint before the next step moves the average
        return {"updates": self.updates, "average": list(self.average)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self._restored = list(state["average"])

    def on_setup(self, ctx: SetupContext) -> None:
        if ctx.sharded:
            raise ConfigError(_FSDP)
        self.params = [p for p in ctx.model.parameters() if p.requires_grad]
        if self._restored is None:
            self.updates = 0  # a fresh start, also when this object trained before
            self.average = [p.detach().to(torch.float32, copy=True) for p in self.params]
            return
        shapes = [tuple(p.shape) for p in self.params]
        if [tuple(a.shape) for a in self._restored] != shapes:
            raise TrainingError(
                "the checkpoint's weight average does not match the model's trainable tensors "
                "(another train.ema_decay set-up or PEFT method wrote it); start a new run"
            )
        # checkpoints load on the CPU; the average lives where its parameter does
        self.average = [
            a.to(device=p.device, dtype=torch.float32)
            for a, p in zip(self._restored, self.params, strict=True)
        ]
        self._restored = None

    @torch.no_grad()
    def on_step_end(self, state: LoopState, loss: float) -> None:
        self.updates += 1
        weight = 1.0 - effective_decay(self.decay, self.updates)
        for avg, p in zip(self.average, self.params, strict=True):
            avg.lerp_(p.detach().to(torch.float32), weight)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not name.startswith("validate") or not self.average:
            yield
            return
        with torch.no_grad():
            live = [p.detach().clone() for p in self.params]
        try:
            with torch.no_grad():
                for p, avg in zip(self.params, self.average, strict=True):
                    p.copy_(avg)
            yield
        finally:
            with torch.no_grad():
                for p, saved in zip(self.params, live, strict=True):
                    p.copy_(saved)

    @torch.no_grad()
    def on_end(self, state: LoopState) -> None:
        # Nothing was validated, so the loop has no best snapshot to restore: the trained model
        # it returns is the average.
        if state.finished and not state.val_history and self.average:
            for p, avg in zip(self.params, self.average, strict=True):
                p.copy_(avg)


def averaging_callbacks(cfg: RunConfig) -> list[Callback]:
    """``train.ema_decay``'s callback for the run's network (none when it is 0)."""
    if cfg.train.ema_decay == 0:
        return []
    if cfg.train.distributed_strategy == "fsdp" and ranks.launched():  # before ranks.init
        raise ConfigError(_FSDP)
    if cfg.peft.method == "adalora":
        raise ConfigError(
            "train.ema_decay with peft.method=adalora: AdaLoRA prunes ranks by zeroing their "
            "weights during training, and an average would bring them back; use peft.method=lora "
            "or train.ema_decay=0"
        )
    return [WeightAverage(cfg.train.ema_decay)]
