"""The training loop, on accelerate: one function, read top to bottom.

Data order is a pure function of (seed, epoch) (``greentune.train.order``), so a resumed run
replays exactly the batches the interrupted run would have seen; with the RNG state restored, its
loss curve is the same.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from greentune.config import TrainConfig
from greentune.distributed import fsdp, ranks
from greentune.errors import ConfigError
from greentune.train import pause
from greentune.train.callbacks import (
    Callback,
    Callbacks,
    EarlyStopping,
    SetupContext,
    StepLoss,
    model_loss,
)
from greentune.train.checkpoint import load_latest, restore_state, save_state, snapshot, unwrap
from greentune.train.defaults import stop_patience
from greentune.train.optim import build_optimizer, build_scheduler
from greentune.train.order import epoch_order
from greentune.train.state import LoopResult, LoopState

__all__ = ["Batches", "LoopResult", "LoopState", "TrainableModel", "train"]


Validation = float | Mapping[str, float]
"""What ``validate`` returns: the validation loss, or ``val_loss`` with other scores."""


class Batches(Protocol):
    """Indexable training data: ``get`` turns sample positions into a batch of tensors. Data
    whose samples differ in length (texts) may also have ``lengths``, one per sample, which
    ``train.group_by_length`` batches by."""

    def __len__(self) -> int: ...

    def get(self, idx: np.ndarray) -> dict[str, torch.Tensor]: ...


class TrainableModel(Protocol):
    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...


def configure_threads(cfg: TrainConfig) -> int:
    """Threads for this process: the given number, else the cores it may use shared evenly
    among the processes torchrun started on this node."""
    threads = cfg.threads or max(1, len(os.sched_getaffinity(0)) // ranks.local_world_size())
    torch.set_num_threads(threads)
    return threads


def threads_line(threads: int) -> str:
    world = ranks.world_size()
    if world == 1:
        return f"threads: {threads}"
    return (
        f"threads: {threads} per process x {ranks.local_world_size()} processes on this node, "
        f"{world} processes in all"
    )


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    precision = cfg.precision
    if precision == "auto":
        # bf16 autocast measured 2.6x slower than fp32 on this CPU (../shared/STACK.md).
        bf16_gpu = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        precision = "bf16" if bf16_gpu else "fp32"
    # Accelerate keeps one global state per process; a second run in the same process (the
    # random-init ablation, tests) may ask for another precision, so start from a clean one.
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision="no" if precision == "fp32" else precision,
    )


def total_optimizer_steps(n_samples: int, cfg: TrainConfig) -> int:
    micro = math.ceil(n_samples / cfg.batch_size)
    per_epoch = math.ceil(micro / cfg.grad_accum)
    total = per_epoch * cfg.epochs
    return min(total, cfg.max_steps) if cfg.max_steps else total


def train(
    model: nn.Module,
    data: Batches,
    cfg: TrainConfig,
    seed: int,
    validate: Callable[[], Validation] | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    callbacks: Iterable[Callback] = (),
) -> LoopResult:
    """Train ``model`` in place; returns the loop state with per-step losses.

    ``validate`` returns the validation loss, or a mapping with ``val_loss`` and other scores
    (``val_accuracy``, ...), all kept in ``val_history``; the best checkpoint and early
    stopping follow ``cfg.select_on`` (``selection_score``).

    ``callbacks`` join the loop (greentune.train.callbacks); ``cfg.patience`` adds early
    stopping. Each epoch's steps run in the callbacks' ``phase("epoch-N")`` and each validation
    in ``phase("validate-N")`` (``validate-init`` before the first step): a meter's windows.
    """
    patience = stop_patience(cfg)
    stopping = [EarlyStopping(patience)] if patience is not None else []
    cbs = Callbacks([*stopping, *callbacks])
    accelerator = make_accelerator(cfg)
    total_steps = total_optimizer_steps(len(data), cfg)
    whole = model  # what the caller gets back, trained, also when a sharded copy trains
    sharded = cfg.distributed_strategy == "fsdp" and ranks.world_size() > 1
    if sharded:
        model = fsdp.shard(model, accelerator.device)
        if validate is not None:
            validate = fsdp.with_whole_model(validate, model, whole)
    optimizer = build_optimizer(model.named_parameters(), cfg)
    scheduler = build_scheduler(optimizer, cfg, total_steps)
    if not sharded:
        model, optimizer = accelerator.prepare(model, optimizer)
    state, best = LoopState(), None
    resumed_from = None
    if resume and checkpoint_dir is not None:
        ckpt = load_latest(checkpoint_dir)
        if ckpt is not None:
            loop, best = restore_state(ckpt, model, optimizer, scheduler)
            state = LoopState(**loop)
            resumed_from = state.step
            cbs.load_state_dict(ckpt.get("callbacks") or {})
    setup = SetupContext(model, optimizer, data, state, total_steps, sharded, cfg.clip_norm)
    # Only a loop that can checkpoint can pause; elsewhere SIGTERM exits at once.
    pausable = pause.pausable() if checkpoint_dir else nullcontext()
    try:
        cbs.on_setup(setup)
        model, optimizer, data = setup.model, setup.optimizer, setup.batches
        n_micro = math.ceil(len(data) / cfg.batch_size)
        if validate is not None and state.step == 0 and not state.val_history:
            # The starting point competes too: early stopping never returns a model worse on
            # validation than the one training began from (e.g. a ridge-initialised skip path).
            best = _validate(state, model, validate, -1, cbs, cfg.select_on)
        trainable_params = [p for p in model.parameters() if p.requires_grad]
        t0 = time.perf_counter() - state.train_s
        engine = _Engine(
            model,
            data,
            cfg,
            seed,
            accelerator,
            optimizer,
            scheduler,
            trainable_params,
            cbs,
            checkpoint_dir,
            t0,
            setup.clip_norm,
            setup.average_micro_batches,
            setup.loss_fn,
        )
        model.train()
        with pausable:
            while not state.finished and state.epoch < cfg.epochs:
                with cbs.phase(f"epoch-{state.epoch}"):
                    _run_epoch(engine, state, best)
                if not state.finished or state.micro_in_epoch >= n_micro:
                    best = _end_epoch(state, model, validate, best, cbs, cfg.select_on)
                elif validate is not None:  # max_steps stopped mid-epoch: that model competes
                    best = (
                        _validate(state, model, validate, state.epoch, cbs, cfg.select_on, True)
                        or best
                    )
                if checkpoint_dir:
                    state.train_s = time.perf_counter() - t0
                    _save(checkpoint_dir, model, optimizer, scheduler, state, best, cfg, cbs)
                    cbs.on_checkpoint(state)
                    # a SIGTERM during validation or the save: this checkpoint is the pause's
                    if ranks.all_sum([float(pause.requested())])[0]:
                        raise pause.TrainingPaused(state.step)
        state.finished = True
        state.train_s = time.perf_counter() - t0
    finally:
        cbs.on_end(state)
    if sharded:
        if validate is not None:  # the whole snapshots live on rank 0
            best = ranks.broadcast(best)
        fsdp.unshard_into(model, whole)
        model = whole
    if best is not None:
        unwrap(model).load_state_dict(best, strict=False)
    model.eval()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return LoopResult(state, trainable, total, resumed_from, cfg.select_on)


@dataclass
class _Engine:
    """What one epoch needs, so ``_run_epoch`` takes three arguments instead of fourteen."""

    model: nn.Module
    data: Batches
    cfg: TrainConfig
    seed: int
    accelerator: Accelerator
    optimizer: Any
    scheduler: Any
    trainable_params: list[nn.Parameter]
    callbacks: Callbacks
    checkpoint_dir: Path | None
    t0: float
    clip_norm: float | None = None
    average_micro_batches: bool = True
    loss_fn: StepLoss = model_loss


def _run_epoch(e: _Engine, state: LoopState, best: dict[str, torch.Tensor] | None) -> None:
    """Optimizer steps until the epoch ends or ``max_steps`` is reached."""
    cfg, model = e.cfg, e.model
    n_micro = math.ceil(len(e.data) / cfg.batch_size)
    lengths = getattr(e.data, "lengths", None) if cfg.group_by_length else None
    order = epoch_order(len(e.data), e.seed, state.epoch, cfg.batch_size, lengths)
    while state.micro_in_epoch < n_micro:
        group = range(state.micro_in_epoch, min(state.micro_in_epoch + cfg.grad_accum, n_micro))
        local_sum = 0.0
        for micro in group:
            idx = order[micro * cfg.batch_size : (micro + 1) * cfg.batch_size]
            local_sum += _micro_step(e, idx, len(group))
            state.samples += len(idx)
        # every rank logs the global batch's loss, the same number one process would see; the
        # pause flag rides along, so all ranks agree on it without a collective of its own
        loss_sum, pause_votes = ranks.all_sum([local_sum, float(pause.requested())])
        if e.clip_norm:
            e.accelerator.clip_grad_norm_(e.trainable_params, e.clip_norm)
        e.optimizer.step()
        e.scheduler.step()
        state.step += 1
        state.micro_in_epoch = group.stop
        lr = float(e.scheduler.get_last_lr()[0])
        state.history.append({"step": state.step, "epoch": state.epoch, "loss": loss_sum, "lr": lr})
        # before zero_grad: AdaLoRA reads gradients
        stop = e.callbacks.on_step_end(state, loss_sum)
        e.optimizer.zero_grad(set_to_none=True)
        if stop or (cfg.max_steps and state.step >= cfg.max_steps):
            state.finished = True
            return
        paused = e.checkpoint_dir is not None and pause_votes > 0
        if e.checkpoint_dir and (paused or state.step % cfg.checkpoint_every == 0):
            state.train_s = time.perf_counter() - e.t0
            _save(e.checkpoint_dir, model, e.optimizer, e.scheduler, state, best, cfg, e.callbacks)
            e.callbacks.on_checkpoint(state)
        if paused:
            raise pause.TrainingPaused(state.step)


def _micro_step(e: _Engine, idx: np.ndarray, group_size: int) -> float:
    """Forward and backward of this rank's share of one global micro-batch.

    Rank r takes every world-th sample. DDP averages gradients over ranks, so each rank's mean
    loss is weighted by its share (n_r * world / n): the average of the weighted gradients is
    the gradient of the global batch's mean loss, also when the batch does not split evenly.
    A rank left without a sample runs one with weight 0, so every rank joins the all-reduce.
    Returns this rank's part of the global mean loss (they sum to it). When the optimizer
    averages micro-batches itself (DP-SGD), each backward sees the micro-batch's own mean loss.
    """
    world = ranks.world_size()
    local = idx[ranks.rank() :: world]
    weight = len(local) * world / len(idx)
    if len(local) == 0:
        local, weight = idx[:1], 0.0
    batch = {k: v.to(e.accelerator.device) for k, v in e.data.get(local).items()}
    with e.accelerator.autocast():
        loss = e.loss_fn(e.model, batch)
    scale = weight / group_size if e.average_micro_batches else weight
    e.accelerator.backward(loss * scale)
    return float(loss.detach()) * weight / world / group_size


def _end_epoch(
    state: LoopState,
    model: nn.Module,
    validate: Callable[[], Validation] | None,
    best: dict[str, torch.Tensor] | None,
    cbs: Callbacks,
    select_on: str,
) -> dict[str, torch.Tensor] | None:
    epoch = state.epoch
    state.epoch += 1
    state.micro_in_epoch = 0
    if validate is not None:
        best = _validate(state, model, validate, epoch, cbs, select_on) or best
    cbs.on_epoch_end(state)
    return best


LOWER_IS_BETTER = ("mape",)
"""Selection scores minimised as they are (the others grow with quality)."""


def selection_score(scores: Mapping[str, float], select_on: str) -> float:
    """What the best checkpoint and early stopping minimise: the validation loss, a score
    that falls with quality (``mape``), or one minus a score that grows with it
    (``select_on: accuracy`` minimises the error rate)."""
    if select_on == "loss":
        return scores["val_loss"]
    key = f"val_{select_on}"
    if key not in scores:
        reported = ", ".join(k.removeprefix("val_") for k in scores)
        raise ConfigError(
            f"train.select_on={select_on}: this task's validation reports {reported} only; "
            "set train.select_on to one of those (loss always works)"
        )
    return scores[key] if select_on in LOWER_IS_BETTER else 1.0 - scores[key]


def _validate(
    state: LoopState,
    model: nn.Module,
    validate: Callable[[], Validation],
    epoch: int,
    cbs: Callbacks,
    select_on: str,
    final: bool = False,
) -> dict[str, torch.Tensor] | None:
    """Record the validation scores and ask the callbacks whether to stop; return a snapshot
    when it is the best so far. ``final``: training has already ended (max_steps)."""
    model.eval()
    # the snapshot is taken inside the phase: a callback that validates other weights there
    # (train.ema_decay's average) has those kept when they are the best
    with torch.no_grad(), cbs.phase(f"validate-{epoch if epoch >= 0 else 'init'}"):
        out = validate()
        scores = (
            {k: float(v) for k, v in out.items()}
            if isinstance(out, Mapping)
            else {"val_loss": float(out)}
        )
        val = selection_score(scores, select_on)
        state.val_history.append({"epoch": epoch, "step": state.step, **scores})
        improved = val < state.best_val
        if improved:
            state.best_val, state.best_epoch, state.bad_epochs = val, epoch, 0
        elif epoch >= 0 and not final:
            state.bad_epochs += 1
        snap = snapshot(model) if improved else None
    model.train()
    # every rank asks its callbacks; one rank's stop (a wall-clock budget, say) stops them all,
    # or the others would wait for it in the next step's collectives
    stop = ranks.all_sum([float(cbs.on_validation(state, val))])[0] > 0
    if stop and not final:
        state.stopped_early = state.finished = True
        state.stop_reason = state.stop_reason or "early stopping"
    return snap


def _save(
    directory: Path,
    model: nn.Module,
    optimizer: Any,
    scheduler: Any,
    state: LoopState,
    best: dict[str, torch.Tensor] | None,
    cfg: TrainConfig,
    cbs: Callbacks,
) -> None:
    save_state(
        directory,
        model,
        optimizer,
        scheduler,
        asdict(state),
        best,
        cfg.keep_checkpoints,
        cbs.state_dict(),
    )
