"""DP-SGD for every fine-tune, as a training callback that wraps the loop's model, optimizer
and batches in ``on_setup`` (Opacus' GradSampleModule and DPOptimizer, Poisson batches).

What no plain ``make_private`` call does here:
- a probe step (privacy/per_sample.py) checks that every trainable tensor gets a correct
  per-sample gradient before training (peft's IA3 and AdaLoRA vectors get none, Hugging
  Face's broadcast position ids give the position table one gradient for the whole batch:
  Opacus stays silent about both);
- the budget is a hard limit: training stops before a step would spend more than the target;
- the accountant and both random streams are saved in every checkpoint, so a resumed run goes
  on spending from where it stopped;
- linear layers' per-sample gradients are kept as their factors (privacy/factored.py), not as
  Opacus' (batch, out, in) tensors: the same clipped sums at a fraction of the cost.
The per-sample gradients, their probe and their clipping live in privacy/per_sample.py.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from greentune.config import DPConfig, RunConfig, TrainConfig
from greentune.distributed import ranks
from greentune.errors import CheckpointError, ConfigError
from greentune.evaluate.baselines import FITTED_ON_NOTHING
from greentune.privacy.accounting import Budget
from greentune.privacy.per_sample import Wrapped, dp_optimizer, wrap_model
from greentune.train.callbacks import Callback, LoopState, SetupContext

if TYPE_CHECKING:
    from greentune.tasks.base import Task

Log = Callable[[str], None]

UNSUPPORTED_METHODS = {
    "ia3": "peft keeps IA3's scaling vectors in ParameterDicts that no Opacus grad sampler "
    "reaches, so their per-sample gradients would be missing",
    "adalora": "peft keeps AdaLoRA's factors in ParameterDicts that no Opacus grad sampler "
    "reaches, and its rank allocation would read gradients that were never clipped",
}


def private_config(task: Task, cfg: RunConfig) -> RunConfig:
    """The run's config under ``privacy.dp``: a method Opacus cannot train is refused, and the
    task switches what would touch the training data outside DP-SGD to a data-independent
    choice (``privacy_notes`` says in words what changed)."""
    if not cfg.privacy.dp.enabled:
        return cfg
    why = UNSUPPORTED_METHODS.get(cfg.peft.method)
    if why:
        raise ConfigError(
            f"privacy.dp cannot train peft.method={cfg.peft.method}: {why}. Use peft.method=lora "
            "(or ln, full, frozen)"
        )
    return task.private_config(cfg)


def privacy_notes(task: Task, cfg: RunConfig) -> list[str]:
    """What DP changed in a run, in words for the log and metrics.json."""
    if not cfg.privacy.dp.enabled:
        return []
    return [
        f"the privacy unit is one {task.privacy_unit}; validation and test data are not trained on",
        *task.privacy_notes(cfg),
    ]


class PoissonBatches:
    """Batches drawn as DP-SGD's analysis assumes: each step includes every sample with
    probability ``sample_rate``, independently of the loop's permutation. The step's batch is
    split into ``group`` micro-batches (virtual batches: one noise draw per step). A
    micro-batch left empty gets a stand-in sample whose gradient the optimizer drops."""

    def __init__(
        self,
        inner: Any,
        sample_rate: float,
        steps_per_epoch: int,
        group: int,
        batch_size: int,
        uniform: Callable[[int], np.ndarray],
        next_part: Callable[[bool], None],
    ) -> None:
        self.inner, self.n = inner, len(inner)
        self.sample_rate, self.group = sample_rate, group
        self.length = steps_per_epoch * group * batch_size  # the loop plans steps from it
        self.uniform = uniform
        self.next_part = next_part
        self.calls = 0
        self.parts: list[np.ndarray] = []
        self.stand_in: list[bool] = []

    def __len__(self) -> int:
        return self.length

    def get(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        part = self.calls % self.group
        self.calls += 1
        if part == 0:
            chosen = np.flatnonzero(self.uniform(self.n) < self.sample_rate)
            parts = sorted(np.array_split(chosen, self.group), key=len)  # empty ones first
            self.stand_in = [len(p) == 0 for p in parts]
            self.parts = [p if len(p) else np.zeros(1, dtype=np.int64) for p in parts]
        self.next_part(self.stand_in[part])
        return dict(self.inner.get(self.parts[part]))


class PartBatches:
    """Fixed-size batches (``poisson_sampling: false``) that tell the optimizer where each
    micro-batch starts, so it clips and sums one part at a time."""

    def __init__(self, inner: Any, next_part: Callable[[bool], None]) -> None:
        self.inner, self.next_part = inner, next_part

    def __len__(self) -> int:
        return len(self.inner)

    def get(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        self.next_part(False)
        return dict(self.inner.get(idx))


class DPTraining(Callback):
    """Opacus DP-SGD around the loop: per-sample clipping, Gaussian noise, Poisson batches,
    an accountant, and a budget that stops training before it is exceeded."""

    state_key = "privacy"

    def __init__(
        self,
        cfg: DPConfig,
        train: TrainConfig,
        seed: int,
        log: Log,
        note: Callable[..., None] | None = None,
        planned_steps: int | None = None,
    ) -> None:
        """``planned_steps``: the steps the budget is planned for when this training is one
        part of a longer one (a federated client's round); None: this training's own steps."""
        self.cfg, self.train, self.seed, self.log, self.note = cfg, train, seed, log, note
        self.planned_steps = planned_steps
        self.budget: Budget | None = None
        self.restored: dict[str, Any] = {}
        self.epochs: list[dict[str, float]] = []
        self.stopped_by_budget = False
        self.frozen: list[str] = []
        self.total_steps = 0
        self.wrapped: Wrapped | None = None
        self.optimizer: Any = None
        self.sampler = np.random.default_rng([seed, 0x5EED])

    # ------------------------------------------------------------------ checkpoint state

    def state_dict(self) -> dict[str, Any]:
        b = self.budget
        return {
            "history": [list(h) for h in b.history] if b else [],
            "epochs": list(self.epochs),
            "sampler": self.sampler.bit_generator.state,
            "noise": self.optimizer.generator.get_state() if self.optimizer else None,
            "stopped_by_budget": self.stopped_by_budget,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.restored = state

    # ------------------------------------------------------------------ hooks

    def on_setup(self, ctx: SetupContext) -> None:
        if ranks.world_size() > 1 or ctx.sharded:
            raise ConfigError(
                "privacy.dp trains in one process: DP-SGD across processes needs Opacus' "
                "DP-DDP with per-rank Poisson sampling, which greentune does not wire; run "
                "without --nproc"
            )
        if ctx.state.step > 0 and not self.restored:
            raise CheckpointError(
                f"the checkpoint at step {ctx.state.step} was written without privacy.dp: the "
                "steps it holds were not private. Start a new run"
            )
        n, k, size = len(ctx.batches), self.train.grad_accum, self.train.batch_size
        steps_per_epoch = math.ceil(n / (size * k))
        self.total_steps = self.planned_steps or ctx.total_steps
        budget = Budget.plan(self.cfg, n, 1.0 / steps_per_epoch, self.total_steps)
        if budget.limit_steps == 0:
            raise ConfigError(
                f"privacy.dp.target_epsilon={self.cfg.target_epsilon} is spent by a single step "
                f"at noise multiplier {budget.noise_multiplier:g}; raise the noise or the target"
            )
        if self.restored:
            budget.history = [(float(s), float(q), int(t)) for s, q, t in self.restored["history"]]
            if budget.history and budget.history[-1][0] != budget.noise_multiplier:
                raise CheckpointError(
                    f"the checkpoint's DP-SGD ran at noise multiplier {budget.history[-1][0]:g}; "
                    f"this run plans {budget.noise_multiplier:g}. Resume with the run's own config"
                )
            self.epochs = list(self.restored.get("epochs") or [])
            self.stopped_by_budget = bool(self.restored.get("stopped_by_budget"))
            if self.restored.get("sampler"):
                self.sampler.bit_generator.state = self.restored["sampler"]
            self.log(
                f"privacy: resumed at step {budget.steps} with epsilon {budget.epsilon():.3g} "
                "already spent"
            )
        self.budget = budget
        self.wrapped = wrap_model(ctx.model, ctx.batches, self.log, self.cfg.factored)
        self.frozen = self.wrapped.frozen
        logical = budget.sample_rate * n if self.cfg.poisson_sampling else float(size * k)
        self.optimizer = dp_optimizer(
            ctx.optimizer, budget, self.cfg, logical, self.seed, self.wrapped.factored
        )
        if self.restored.get("noise") is not None:
            self.optimizer.generator.set_state(self.restored["noise"])
        part = self.optimizer.next_part
        grouped = self.train.group_by_length and getattr(ctx.batches, "lengths", None) is not None
        ctx.batches = (
            PoissonBatches(
                ctx.batches, budget.sample_rate, steps_per_epoch, k, size, self._uniform, part
            )
            if self.cfg.poisson_sampling
            else PartBatches(ctx.batches, part)
        )
        ctx.model, ctx.optimizer = self.wrapped.module, self.optimizer
        ctx.clip_norm, ctx.average_micro_batches = None, False
        limit = (
            f", at most {budget.limit_steps} steps within epsilon {self.cfg.target_epsilon:g}"
            if budget.limit_steps is not None
            else " (no target_epsilon: no limit)"
        )
        if grouped:
            limit += "; batches not grouped by length (their draw must not depend on the data)"
        self.log(
            f"privacy: DP-SGD (Opacus), noise multiplier {budget.noise_multiplier:.4g}, clip "
            f"{self.cfg.max_grad_norm:g}, sample rate {budget.sample_rate:.4g} "
            f"({'Poisson' if self.cfg.poisson_sampling else 'shuffled fixed-size'} batches of "
            f"~{budget.sample_rate * n:.0f}), delta {budget.delta:.3g}, {self.cfg.accountant} "
            f"accountant{limit}"
        )

    def _uniform(self, n: int) -> np.ndarray:
        if self.cfg.secure_mode:
            raw = np.frombuffer(os.urandom(8 * n), dtype=np.uint64)
            return raw.astype(np.float64) / 2.0**64
        return self.sampler.random(n)

    def on_step_end(self, state: LoopState, loss: float) -> bool:
        assert self.budget is not None
        self.budget.spend(1)
        if self.budget.exhausted() and self.budget.steps < self.total_steps:
            self.stopped_by_budget = True
            self.log(
                f"privacy: stopping after step {state.step}: one more step would spend more "
                f"than epsilon {self.cfg.target_epsilon:g} (spent {self.budget.epsilon():.4g})"
            )
            return True
        return False

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        yield
        if name.startswith("epoch-") and self.note is not None and self.budget is not None:
            self.note(epsilon=self.budget.epsilon(), delta=self.budget.delta)

    def on_epoch_end(self, state: LoopState) -> None:
        assert self.budget is not None
        eps = self.budget.epsilon()
        self.epochs.append({"epoch": state.epoch - 1, "step": state.step, "epsilon": eps})
        self.log(f"privacy: epsilon {eps:.4g} spent after epoch {state.epoch - 1}")

    def on_end(self, state: LoopState) -> None:
        if self.wrapped is not None:
            self.wrapped.close()

    def summary(self) -> dict[str, Any]:
        """metrics.json's ``privacy``: the guarantee and how it was spent."""
        b = self.budget
        if b is None:
            return {}
        return {
            "mechanism": "DP-SGD (Opacus): per-sample clipping, Gaussian noise",
            "epsilon": b.epsilon(),
            "delta": b.delta,
            "target_epsilon": self.cfg.target_epsilon,
            "noise_multiplier": b.noise_multiplier,
            "max_grad_norm": self.cfg.max_grad_norm,
            "sample_rate": b.sample_rate,
            "training_samples": b.n,
            "steps": b.steps,
            "accountant": self.cfg.accountant,
            "poisson_sampling": self.cfg.poisson_sampling,
            "secure_mode": self.cfg.secure_mode,
            "factored": self.cfg.factored,
            "stopped_by_budget": self.stopped_by_budget,
            "epochs": self.epochs,
            "frozen": self.frozen,
        }


def privacy_report(
    task: Task, cfg: RunConfig, dp: DPTraining | None, rows: list[str], model: str
) -> dict[str, Any] | None:
    """metrics.json's ``privacy`` (None without DP): the callback's summary, the privacy unit,
    what DP changed, and the rows of the table fitted on raw training data."""
    if dp is None:
        return None
    return {
        **dp.summary(),
        "unit": task.privacy_unit,
        "notes": privacy_notes(task, cfg),
        "non_private_reference": [r for r in rows if r != model and r not in FITTED_ON_NOTHING],
    }
