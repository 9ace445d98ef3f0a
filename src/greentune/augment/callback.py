"""Augmentation as a training callback: ``on_setup`` wraps the training batches, so validation
and test data (read through their own batches) are never touched.

Each augmented micro-batch draws from a generator seeded by (run seed, process rank, samples
seen so far): the loop restores ``samples`` from a checkpoint, so a resumed run replays the same
augmentations, and two runs with one seed see the same ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from greentune.distributed import ranks
from greentune.train.callbacks import Callback, LoopState, SetupContext

Transform = Callable[[Any, np.ndarray, np.random.Generator], dict[str, torch.Tensor]]
"""(the training batches, sample positions, generator) -> an augmented batch."""

STREAM = 0xA06
"""Keeps augmentation's draws apart from every other stream seeded with the run's seed."""


class AugmentedBatches:
    """The training batches with ``transform`` applied on every ``get``."""

    def __init__(self, inner: Any, transform: Transform, seed: int, state: LoopState) -> None:
        self.inner, self.transform, self.seed, self.state = inner, transform, seed, state

    def __len__(self) -> int:
        return len(self.inner)

    @property
    def lengths(self) -> np.ndarray | None:
        """The inner batches' lengths (an edit changes a text's length by a few tokens)."""
        return getattr(self.inner, "lengths", None)

    def get(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, STREAM, ranks.rank(), self.state.samples])
        return self.transform(self.inner, idx, rng)


class Augmentation(Callback):
    """Wraps the training batches with a task's ``Transform`` (``greentune.augment``)."""

    def __init__(self, transform: Transform, seed: int, settings: dict[str, float]) -> None:
        self.transform, self.seed, self.settings = transform, seed, settings

    def __str__(self) -> str:
        return "augmentation: " + ", ".join(f"{k} {v:g}" for k, v in self.settings.items())

    def on_setup(self, ctx: SetupContext) -> None:
        ctx.batches = AugmentedBatches(ctx.batches, self.transform, self.seed, ctx.state)
