"""Atomic checkpoints: model (trainable tensors), optimizer, scheduler, RNG and loop position.

Written once, by rank 0, with whole tensors (under FSDP gathered from the shards first), so any
checkpoint resumes with any number of processes and either strategy.

A checkpoint is written to a temporary file in the same folder and renamed into place, so a
crash mid-write never leaves a truncated checkpoint behind the newest good one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from greentune import faults
from greentune.distributed import fsdp, ranks
from greentune.errors import CheckpointError
from greentune.io import atomic_write
from greentune.rundir import checkpoint_step, list_checkpoints

__all__ = ["checkpoint_step", "list_checkpoints", "load_latest", "restore_state", "save_state"]


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{step:08d}.pt"

    def write(tmp: Path) -> None:
        torch.save(state, tmp)
        faults.point("checkpoint-write")

    atomic_write(path, write)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest(directory: Path) -> dict[str, Any] | None:
    """Newest readable checkpoint, or None when there is none."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # a damaged file: say so, fall back to the one before
            print(f"warning: skipping unreadable checkpoint {path}: {exc}")
    if list_checkpoints(directory):
        raise CheckpointError(f"{directory}: no readable checkpoint")
    return None


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in names}


def unwrap(model: torch.nn.Module) -> Any:
    """The module inside a DDP wrapper or Opacus' GradSampleModule (itself otherwise)."""
    inner = model._modules.get("_module")  # GradSampleModule forwards unknown attributes
    if isinstance(inner, torch.nn.Module):
        return unwrap(inner)
    return getattr(model, "module", model)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors, whole (under FSDP gathered to rank 0, the others get {})."""
    return fsdp.trainable_state(model) if fsdp.is_sharded(model) else trainable_state(unwrap(model))


def save_state(
    directory: Path,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    loop: dict[str, Any],
    best: dict[str, torch.Tensor] | None,
    keep: int,
    callbacks: dict[str, Any] | None = None,
) -> None:
    """Call on every rank: under FSDP each joins the gathers; rank 0 writes. ``callbacks``:
    the states of callbacks that keep one (``Callback.state_key``)."""
    sharded = fsdp.is_sharded(model)
    if not sharded and not ranks.is_main():  # DDP replicas are identical: rank 0 saves alone
        return
    payload = {
        "model": snapshot(model),
        "optimizer": fsdp.optimizer_state(model, optimizer) if sharded else optimizer.state_dict(),
        "optimizer_format": fsdp.OPTIMIZER_FORMAT if sharded else "index",
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "loop": loop,
        "best": best,
        "callbacks": callbacks or {},
    }
    if ranks.is_main():
        save_checkpoint(directory, loop["step"], payload, keep)


def restore_state(
    ckpt: dict[str, Any], model: torch.nn.Module, optimizer: Any, scheduler: Any
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Any checkpoint into any strategy and number of processes; returns (loop, best)."""
    sharded = fsdp.is_sharded(model)
    if sharded:
        fsdp.load_model_state(model, ckpt["model"])
    else:
        unwrap(model).load_state_dict(ckpt["model"], strict=False)
    if sharded or ckpt.get("optimizer_format") == fsdp.OPTIMIZER_FORMAT:
        raw = getattr(optimizer, "optimizer", optimizer)  # inside accelerate's wrapper
        fsdp.load_optimizer_state(model, raw, ckpt["optimizer"])
    else:
        optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    return ckpt["loop"], ckpt["best"]
