"""Training callbacks: how code outside the loop joins it, without a branch in the loop.

Hooks, in the order the loop calls them::

    on_setup(ctx)              once, after the model is prepared and a checkpoint restored:
                               may wrap ctx.model, ctx.optimizer or ctx.batches (DP does)
    phase("validate-init")     a context around each validation and each epoch's steps
    on_validation(state, loss)   also after validate-init: True there means no step at all
    phase("epoch-N")             (energy windows, tracing)
      on_step_end(state, loss)   after each optimizer step, gradients still present; True
                                 stops training after this step (a privacy budget)
    phase("validate-N")
    on_validation(state, loss)   after each validation; return True to stop training
    on_epoch_end(state)
    on_end(state)              always, also when training raised (state.finished says)

Wrapping in ``on_setup``: the learning-rate schedule and a restored checkpoint act on the
optimizer the loop built, so a replacement must wrap it and share its ``param_groups`` (as
Opacus' DPOptimizer does); wrapped batches keep the planned number of samples. A callback that
clips or averages gradients itself sets ``ctx.clip_norm`` to None and
``ctx.average_micro_batches`` to False (DP-SGD clips per sample and averages a virtual batch).
A callback that changes the training objective wraps ``ctx.loss_fn`` (adversarial training,
label smoothing, R-Drop: ``greentune.train.regularize``); validation keeps the model's loss.
A callback with a ``state_key`` has its ``state_dict()`` saved in every checkpoint and handed
back through ``load_state_dict`` on resume, before ``on_setup`` (the privacy accountant).

With several processes every rank runs the callbacks; a stop asked by any rank stops them
all. After the validation that ends a ``max_steps`` run mid-epoch, the vote is ignored
(training is over).

From Python: ``train(..., callbacks=[MyCallback()])`` or ``greentune.run(cfg,
callbacks=[...])``. From a config: ``train.callbacks: [loss-log, nan-guard]`` names entries of
``CALLBACKS``. Built-in behaviour is made of callbacks too: early stopping (``train.patience``),
progress bars, energy windows and AdaLoRA's rank allocation (``tuning.methods``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from greentune.config import RunConfig
from greentune.errors import TrainingError
from greentune.registry import Registry
from greentune.train.checkpoint import unwrap
from greentune.train.state import LoopResult, LoopState

__all__ = [
    "CALLBACKS",
    "Callback",
    "CallbackContext",
    "CallbackFactory",
    "Callbacks",
    "EarlyStopping",
    "EnergyWindows",
    "LoopResult",
    "LoopState",
    "LossLog",
    "NanGuard",
    "Progress",
    "ProgressBar",
    "SetupContext",
    "StepLoss",
    "Window",
    "build_callbacks",
    "model_loss",
    "no_window",
    "resolve_callbacks",
]

Window = Callable[[str], AbstractContextManager[Any]]
"""A meter's ``window``: a named context whose energy is recorded."""


def no_window(name: str) -> AbstractContextManager[Any]:
    """A ``Window`` that records nothing."""
    return nullcontext()


StepLoss = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
"""(the loop's model, a batch) -> the loss its backward runs on."""


def model_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's own loss on its forward pass: the loop's default ``StepLoss``."""
    return unwrap(model).loss(model(batch), batch)  # type: ignore[no-any-return]


@dataclass
class SetupContext:
    """What ``on_setup`` sees and may replace before the first step."""

    model: nn.Module
    optimizer: Any
    batches: Any
    """The training data (``Batches``: ``len`` and ``get(positions)``)."""
    state: LoopState
    """After a resume: the checkpoint's state (``state.step`` steps done)."""
    total_steps: int
    sharded: bool
    """True under FSDP with several processes: parameters and gradients are shards."""
    clip_norm: float | None = None
    """The loop's global gradient-norm clipping (train.clip_norm); None: none."""
    average_micro_batches: bool = True
    """True: the loop scales each micro-batch's loss by 1 / micro-batches per step, so the
    gradients add up to the step's mean; False: the optimizer averages them itself."""
    loss_fn: StepLoss = field(default_factory=lambda: model_loss)
    """The objective one micro-batch trains on; a callback may wrap it (adversarial training
    adds a perturbed pass, R-Drop a second dropout pass). Validation never uses it."""


class Callback:
    """Override the hooks you need; each does nothing here."""

    state_key: str | None = None
    """Set it to have ``state_dict()`` saved in checkpoints under this key."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of this callback (when ``state_key`` is set)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """On resume, before ``on_setup``: what ``state_dict`` returned at the checkpoint."""

    def on_setup(self, ctx: SetupContext) -> None:
        """Before training: may wrap or replace ``ctx.model``, ``ctx.optimizer``,
        ``ctx.batches``."""

    def phase(self, name: str) -> AbstractContextManager[Any]:
        """A context around each phase of the loop: ``epoch-N``, ``validate-N``,
        ``validate-init``."""
        return nullcontext()

    def on_step_end(self, state: LoopState, loss: float) -> bool | None:
        """After optimizer step ``state.step`` (gradients not yet cleared); ``loss`` is the
        global batch's mean loss. True stops training after this step; every rank must give
        the same answer (no collective joins it)."""
        return None

    def on_validation(self, state: LoopState, val_loss: float) -> bool:
        """After a validation (``state.val_history[-1]``, every score); return True to stop
        training. ``val_loss`` is the score that selects (``train.select_on``): the loss, the
        MAPE, or one minus the accuracy or macro F1."""
        return False

    def on_epoch_end(self, state: LoopState) -> None:
        """After an epoch and its validation."""

    def on_checkpoint(self, state: LoopState) -> None:
        """After a checkpoint at ``state.step`` is on disk (rank 0 wrote it)."""

    def on_end(self, state: LoopState) -> None:
        """When the loop ends: finished, stopped, or interrupted by an error or a pause."""


class Callbacks:
    """Several callbacks called as one, in order."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.items = list(callbacks)

    def on_setup(self, ctx: SetupContext) -> None:
        for c in self.items:
            c.on_setup(ctx)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        with ExitStack() as stack:
            for c in self.items:
                stack.enter_context(c.phase(name))
            yield

    def on_step_end(self, state: LoopState, loss: float) -> bool:
        """Every callback sees the step; training stops when any asks."""
        votes = [bool(c.on_step_end(state, loss)) for c in self.items]
        return any(votes)

    def state_dict(self) -> dict[str, Any]:
        return {c.state_key: c.state_dict() for c in self.items if c.state_key}

    def load_state_dict(self, states: dict[str, Any]) -> None:
        for c in self.items:
            if c.state_key and c.state_key in states:
                c.load_state_dict(states[c.state_key])

    def on_validation(self, state: LoopState, val_loss: float) -> bool:
        """Every callback sees the validation; training stops when any asks."""
        votes = [bool(c.on_validation(state, val_loss)) for c in self.items]
        return any(votes)

    def on_epoch_end(self, state: LoopState) -> None:
        for c in self.items:
            c.on_epoch_end(state)

    def on_checkpoint(self, state: LoopState) -> None:
        for c in self.items:
            c.on_checkpoint(state)

    def on_end(self, state: LoopState) -> None:
        for c in self.items:
            c.on_end(state)


# ----------------------------------------------------------------------------- built-ins


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs without a better validation loss (the loop keeps and
    restores the best weights)."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_validation(self, state: LoopState, val_loss: float) -> bool:
        return state.bad_epochs >= self.patience


class EnergyWindows(Callback):
    """Each phase of the loop in a meter window (``train/epoch-3``, ``train/validate-3``),
    where other callbacks may ``note`` facts for its ledger row;
    ``tick`` journals the meter's readings at every checkpoint, so a crash loses at most the
    energy since the last one (or since the last periodic tick, if sooner)."""

    def __init__(self, window: Window, tick: Callable[[], None] | None = None) -> None:
        self.window = window
        self.tick = tick
        self.open: list[Any] = []

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        with self.window(name) as handle:
            self.open.append(handle)
            try:
                yield
            finally:
                self.open.pop()

    def note(self, **extra: Any) -> None:
        """Add ``extra`` to the ledger row of the phase now open (e.g. the epsilon spent by the
        end of an epoch); nothing when no phase is open or the window keeps no notes."""
        notes = getattr(self.open[-1], "extra", None) if self.open else None
        if isinstance(notes, dict):
            notes.update(extra)

    def on_checkpoint(self, state: LoopState) -> None:
        if self.tick is not None:
            self.tick()


class Progress(Protocol):
    """A progress display (the CLI's rich bar)."""

    def start(self, total_steps: int, done: int) -> None: ...

    def update(self, step: int, loss: float, epoch: int) -> None: ...

    def stop(self) -> None: ...


class ProgressBar(Callback):
    """Drives a ``Progress`` display: started at setup, one update per step, stopped at the
    end (also when training raised)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def on_setup(self, ctx: SetupContext) -> None:
        self.progress.start(ctx.total_steps, ctx.state.step)

    def on_step_end(self, state: LoopState, loss: float) -> None:
        self.progress.update(state.step, loss, state.epoch)

    def on_end(self, state: LoopState) -> None:
        self.progress.stop()


class LossLog(Callback):
    """One line every ``every`` steps and after each validation, through the run's log (and so
    in log.txt): for runs without a terminal, where the progress bar says nothing."""

    def __init__(self, log: Callable[[str], None], every: int) -> None:
        self.log, self.every, self.total = log, every, 0

    def on_setup(self, ctx: SetupContext) -> None:
        self.total = ctx.total_steps

    def on_step_end(self, state: LoopState, loss: float) -> None:
        if state.step % self.every == 0 or state.step == self.total:
            lr = state.history[-1]["lr"] if state.history else math.nan
            self.log(
                f"step {state.step}/{self.total} epoch {state.epoch}: loss {loss:.6g}, lr {lr:.3g}"
            )

    def on_validation(self, state: LoopState, val_loss: float) -> bool:
        row = state.val_history[-1] if state.val_history else {"val_loss": val_loss}
        best = " (best so far)" if val_loss <= state.best_val else ""
        scores = ", ".join(
            f"{k.removeprefix('val_').replace('_', ' ')} {v:.6g}"
            for k, v in row.items()
            if k.startswith("val_")
        )
        self.log(f"validation at step {row.get('step', state.step)}: {scores}{best}")
        return False


class NanGuard(Callback):
    """Stop with a clear error at the first step whose loss is not finite (a diverged run
    would otherwise train on, and checkpoint, NaN weights)."""

    def on_step_end(self, state: LoopState, loss: float) -> None:
        if not math.isfinite(loss):
            raise TrainingError(
                f"training diverged: the loss is {loss} at step {state.step} (epoch "
                f"{state.epoch}); lower train.lr, set train.clip_norm, or check the data for "
                "extreme values. The last checkpoint before it is kept"
            )


# ----------------------------------------------------------------------------- by name


@dataclass(frozen=True)
class CallbackContext:
    """What a callback built by name from ``train.callbacks``, or by a factory given to
    ``greentune.run``, may use."""

    cfg: RunConfig
    log: Callable[[str], None]
    read_j: Callable[[], float] | None = None
    """The run's meter: joules spent so far by this process (None when not metered)."""


CALLBACKS: Registry[Callable[[CallbackContext], Callback]] = Registry("train.callbacks entry")
CALLBACKS.add("loss-log", lambda ctx: LossLog(ctx.log, ctx.cfg.train.log_every))
CALLBACKS.add("nan-guard", lambda ctx: NanGuard())


CallbackFactory = Callable[[CallbackContext], Callback]
"""What ``greentune.run`` also takes in ``callbacks``: built once the run's meter exists."""


def resolve_callbacks(
    given: Iterable[Callback | CallbackFactory], ctx: CallbackContext
) -> list[Callback]:
    """Callbacks as given, factories called with ``ctx`` (a factory: anything callable that
    has none of the hooks, so callbacks that do not subclass ``Callback`` still work)."""
    hooks = ("on_setup", "on_step_end", "on_validation", "on_epoch_end", "on_end")
    out: list[Callback] = []
    for c in given:
        is_factory = callable(c) and not any(hasattr(c, h) for h in hooks)
        out.append(c(ctx) if is_factory else c)  # type: ignore[operator,arg-type]
    return out


def build_callbacks(ctx: CallbackContext) -> list[Callback]:
    """The callbacks ``train.callbacks`` names, in order; unknown names list the valid ones."""
    return [CALLBACKS.get(name)(ctx) for name in ctx.cfg.train.callbacks]
