"""Stopping trials that will not reach the front: the median stopping rule with energy, not
steps, as the budget axis.

Optuna cannot prune multi-objective studies (``trial.should_prune`` is single-objective only),
so the search brings its own rule, as a training callback: at each validation after the
first epoch, a trial whose best validation score (``train.select_on``) so far is worse than
the median of the finished trials' best *at the same energy spent* stops there. A trial that
needs more energy than others to reach the same score cannot be on the front of (quality,
energy) unless it later overtakes them, which the median rule bets against (Golovin et al.
2017, Google Vizier).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

from greentune.train.callbacks import Callback, SetupContext
from greentune.train.state import LoopState

J_PER_WH = 3600.0

Curve = list[tuple[float, float]]
"""(Wh spent in training, best validation score so far) at each validation."""


def best_at(curve: Curve, wh: float) -> float:
    """A curve's best loss reached with at most ``wh`` spent (inf when none yet)."""
    return min((loss for spent, loss in curve if spent <= wh), default=math.inf)


class EnergyMedianStop(Callback):
    """Stops training when the best validation score, at the energy spent so far, is worse than
    the median of ``curves`` (the finished trials') at that energy."""

    def __init__(
        self,
        curves: list[Curve],
        read_j: Callable[[], float],
        min_trials: int = 3,
        warmup: int = 1,
    ) -> None:
        self.curves, self.read_j = curves, read_j
        self.min_trials, self.warmup = min_trials, warmup
        self.curve: Curve = []
        self.j0 = 0.0
        self.best = math.inf
        self.total_steps = 0
        self.pruned: str | None = None
        """Why the trial was stopped, once it was."""

    def on_setup(self, ctx: SetupContext) -> None:
        self.j0 = self.read_j()
        self.total_steps = ctx.total_steps

    def on_validation(self, state: LoopState, val_loss: float) -> bool:
        wh = (self.read_j() - self.j0) / J_PER_WH
        self.best = min(self.best, val_loss)
        self.curve.append((wh, self.best))
        trained = sum(1 for row in state.val_history if row.get("epoch", -1) >= 0)
        # the last validation: training is over, stopping saves nothing and would only hide
        # a finished trial from the front
        last = self.total_steps > 0 and state.step >= self.total_steps
        if trained < self.warmup or self.pruned or last:
            return False
        refs = [r for r in (best_at(c, wh) for c in self.curves) if math.isfinite(r)]
        if len(refs) < self.min_trials:
            return False
        median = statistics.median(refs)
        if self.best > median:
            self.pruned = (
                f"pruned by the search: best validation score {self.best:.6g} after {wh:.4g} Wh, "
                f"above the median {median:.6g} of {len(refs)} finished trials at that energy"
            )
            state.stop_reason = self.pruned
            return True
        return False
