"""Time and energy budgets for training: stop at the budget, keep the best model so far.

``train.budget_s`` and ``train.budget_wh`` cap one network's training (its validations
included). The check runs after every optimizer step; when a budget is spent the loop ends
training there, validates that last model so it competes, and restores the best one (the
same path as a ``max_steps`` stop). Spending carries over a resume through the checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from greentune.config import TrainConfig
from greentune.distributed import ranks
from greentune.errors import ConfigError
from greentune.train.callbacks import Callback, SetupContext
from greentune.train.state import LoopState

J_PER_WH = 3600.0
AUTO_S_PER_SAMPLE = 0.05
AUTO_MIN_S = 600.0


def auto_budget_s(total_steps: int, cfg: TrainConfig) -> float:
    """The ``auto`` time budget: it grows with the samples training plans to see."""
    samples = total_steps * cfg.batch_size * cfg.grad_accum
    return max(AUTO_MIN_S, AUTO_S_PER_SAMPLE * samples)


class Budget(Callback):
    """Ends training when its time (``budget_s``) or energy (``budget_wh``) is spent."""

    state_key = "budget"

    def __init__(
        self,
        cfg: TrainConfig,
        read_j: Callable[[], float] | None,
        log: Callable[[str], None],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if cfg.budget_wh is not None and read_j is None:
            raise ConfigError(
                "train.budget_wh needs the energy meter; set energy.enabled=true or use "
                "train.budget_s"
            )
        self.cfg, self.read_j, self.log, self.clock = cfg, read_j, log, clock
        self.limit_s: float | None = None
        self.before_s = self.before_wh = 0.0
        self.t0 = self.j0 = 0.0
        self.stopped: str | None = None
        """'time' or 'energy' once a budget ended training."""

    def state_dict(self) -> dict[str, Any]:
        return {"spent_s": self.spent_s(), "spent_wh": self.spent_wh()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.before_s = float(state.get("spent_s", 0.0))
        self.before_wh = float(state.get("spent_wh", 0.0))

    def on_setup(self, ctx: SetupContext) -> None:
        b = self.cfg.budget_s
        self.limit_s = auto_budget_s(ctx.total_steps, self.cfg) if b == "auto" else b
        self.t0 = self.clock()
        self.j0 = self.read_j() if self.read_j is not None else 0.0

    def spent_s(self) -> float:
        return self.before_s + (self.clock() - self.t0 if self.t0 else 0.0)

    def spent_wh(self) -> float:
        if self.read_j is None or not self.t0:
            return self.before_wh
        return self.before_wh + (self.read_j() - self.j0) / J_PER_WH

    def on_step_end(self, state: LoopState, loss: float) -> bool:
        spent_s = self.spent_s()
        wh = self.cfg.budget_wh
        # with several processes each meters its own share (its GPU, its process): the energy
        # budget is for all of them together, and every rank must reach the same decision, or
        # one that stops alone leaves the others waiting in the next step's collectives
        spent_wh, time_votes = ranks.all_sum(
            [self.spent_wh() if wh is not None else 0.0, float(self._over_time(spent_s))]
        )
        if time_votes > 0:
            self.stopped = "time"
            what = f"time budget ({spent_s:.0f} s of train.budget_s={self.limit_s:.0f})"
        elif wh is not None and spent_wh >= wh:
            self.stopped = "energy"
            what = f"energy budget ({spent_wh:.3g} Wh of train.budget_wh={wh:g})"
        else:
            return False
        state.stop_reason = f"{self.stopped} budget"
        self.log(
            f"train: stopped at the {what} after step {state.step} (epoch {state.epoch}); the "
            "best model so far is kept"
        )
        return True

    def _over_time(self, spent_s: float) -> bool:
        return self.limit_s is not None and spent_s >= self.limit_s


def budget_callbacks(
    cfg: TrainConfig, read_j: Callable[[], float] | None, log: Callable[[str], None]
) -> list[Callback]:
    """The budget callback ``cfg`` asks for (none when both budgets are off)."""
    if cfg.budget_s is None and cfg.budget_wh is None:
        return []
    return [Budget(cfg, read_j, log)]
