"""What compression needs from a finished run, for any task: ``LoadedRun`` (built by the run's
task: the model with its PEFT adapter merged into plain weights, the run's data as batches, how
to score, how to save), and a few helpers on it."""

from __future__ import annotations

import copy
import os

import numpy as np
import torch
from torch import nn

from greentune.errors import CompressError
from greentune.models.variants import read_variant
from greentune.rundir import RunDir
from greentune.tasks import TASKS, LoadedRun

__all__ = ["LoadedRun", "fresh_copy", "load_task", "sample_batch"]


def load_task(path: str | os.PathLike[str]) -> LoadedRun:
    run = RunDir.open(path)
    run.check_finished("compress it")
    fmt = read_variant(run.model_dir)["format"]
    if fmt != "torch":
        raise CompressError(
            f"{run.path} holds a {fmt} model; compress the torch run it came from, or a pruned or "
            "distilled run (those stay torch)"
        )
    run.metrics  # noqa: B018  (refuses a run that did not finish)
    return TASKS.get(run.config.task).load_for_compression(run)


def fresh_copy(model: nn.Module) -> nn.Module:
    """Methods change their own copy: the reference model stays as loaded."""
    return copy.deepcopy(model).eval()


def sample_batch(task: LoadedRun, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A fixed batch of test inputs (repeated when the split is smaller than ``size``)."""
    test = task.batches["test"]
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(test), size=size, replace=len(test) < size)
    batch = test.get(np.sort(idx))
    return {k: v for k, v in batch.items() if k in task.input_names}
