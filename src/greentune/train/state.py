"""Where a training loop stands (checkpointed as a whole) and what it returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from greentune.results import TrainingSummary


@dataclass
class LoopState:
    epoch: int = 0
    step: int = 0
    """Optimizer steps taken."""
    micro_in_epoch: int = 0
    """Micro-batches of the current epoch already consumed."""
    best_val: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    """Epochs since validation last improved (what early stopping counts)."""
    stopped_early: bool = False
    stop_reason: str | None = None
    """Why training ended before its planned steps: 'early stopping', 'time budget',
    'energy budget', or what a callback says; None: it ran its course."""
    finished: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    """One row per optimizer step: step, epoch, loss, lr."""
    val_history: list[dict[str, float]] = field(default_factory=list)
    train_s: float = 0.0
    samples: int = 0


@dataclass
class LoopResult:
    state: LoopState
    trainable: int
    total: int
    resumed_from_step: int | None = None
    """The checkpoint's step when training continued from one."""
    select_on: str = "loss"
    """What chose the best epoch (``train.select_on``)."""

    @property
    def samples_per_s(self) -> float:
        return self.state.samples / self.state.train_s if self.state.train_s else 0.0

    @property
    def best_val_loss(self) -> float:
        """The validation loss of the kept model (``best_val`` is what chose it, which is
        the loss unless ``train.select_on`` says otherwise)."""
        if self.select_on == "loss":
            return self.state.best_val
        kept = [r for r in self.state.val_history if r["epoch"] == self.state.best_epoch]
        return kept[-1]["val_loss"] if kept else math.inf

    def trained_line(self) -> str:
        """The log's line on training, with the kept model's validation loss against the
        start's: what training added to its start (a ridge, a seasonal naive, another run's
        skip path, a fresh head) reads off the log."""
        s = self.state
        start = next((r["val_loss"] for r in s.val_history if r["epoch"] == -1), None)
        if s.best_epoch == -1:
            loss = "" if start is None else f" (loss {start:.6g})"
            best = f"no epoch beat the starting point on validation{loss}: kept it"
        else:
            kept = self.best_val_loss
            loss = ""
            if start and math.isfinite(kept):
                # above the start only where train.select_on chose by another score than the loss
                change = 100 * (1 - kept / start)
                side = f"{change:.1f} % below" if change >= 0 else f"{-change:.1f} % above"
                loss = f" (validation loss {kept:.6g}, {side} the start's {start:.6g})"
            best = f"best epoch {s.best_epoch}{loss}"
        best += self._chosen_on()
        resumed = (
            f" (resumed from the checkpoint at step {self.resumed_from_step})"
            if self.resumed_from_step is not None
            else ""
        )
        return (
            f"trained {s.step} steps in {s.train_s:.1f} s ({self.samples_per_s:.0f} samples/s)"
            f"{resumed}, {best}{f', stopped by {s.stop_reason}' if s.stop_reason else ''}"
        )

    def _chosen_on(self) -> str:
        """``, chosen on validation mape (2.897; the start's 2.913)`` where ``train.select_on``
        is not the loss: the loss clause alone would not say why this model was kept."""
        if self.select_on == "loss":
            return ""
        key = f"val_{self.select_on}"
        rows = {r["epoch"]: r for r in self.state.val_history if key in r}
        kept, start = rows.get(self.state.best_epoch), rows.get(-1)
        name = self.select_on.replace("_", " ")
        if kept is None:
            return f", chosen on validation {name}"
        against = "" if start is None or start is kept else f"; the start's {start[key]:.4g}"
        return f", chosen on validation {name} ({kept[key]:.4g}{against})"

    def summary(self) -> TrainingSummary:
        """What metrics.json (and compress's notes) say about a training."""
        s = self.state
        return TrainingSummary(
            steps=s.step,
            epochs_run=s.epoch,
            best_epoch=s.best_epoch,
            best_val_loss=self.best_val_loss,
            selected_on=self.select_on,
            stopped_early=s.stopped_early,
            stop_reason=s.stop_reason,
            train_s=s.train_s,
            samples=s.samples,
            samples_per_s=self.samples_per_s,
            trainable_parameters=self.trainable,
            total_parameters=self.total,
            loss_curve=[round(r["loss"], 6) for r in s.history],
            val_curve=s.val_history,
        )
