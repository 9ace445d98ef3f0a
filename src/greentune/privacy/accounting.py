"""The privacy budget of one training: Opacus' accountants (RDP or PRV) over DP-SGD's steps.

The accountant's whole state is its history of (noise multiplier, sample rate, steps), so it is
saved in every checkpoint and a resumed run goes on from it: epsilon never resets on resume.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

from greentune.config import DPConfig
from greentune.errors import ConfigError

History = list[tuple[float, float, int]]
"""(noise multiplier, sample rate, steps), as Opacus' accountants keep it."""


def default_delta(n: int) -> float:
    """1 / (10 n): below 1 / n, where releasing one whole sample would still fit the bound."""
    return 1.0 / (10 * n)


def epsilon(history: History, delta: float, accountant: str = "rdp") -> float:
    """Epsilon spent by ``history`` at ``delta`` (inf when a step had no noise)."""
    steps = [(s, q, t) for s, q, t in history if t > 0]
    if not steps:
        return 0.0
    if any(s <= 0 for s, _, _ in steps):
        return math.inf
    from opacus.accountants import create_accountant

    acc = create_accountant(accountant)
    acc.history = list(steps)
    with warnings.catch_warnings():  # "optimal order is the largest alpha": still a valid bound
        warnings.simplefilter("ignore", UserWarning)
        return float(acc.get_epsilon(delta=delta))


def calibrate(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str
) -> float:
    """The smallest noise multiplier (to 1 %) whose ``steps`` steps spend at most the target."""
    if steps < 1:
        raise ConfigError("privacy.dp: no training step is planned, so there is nothing to noise")
    lo, hi = 0.0, 1.0
    while epsilon([(hi, sample_rate, steps)], delta, accountant) > target_epsilon:
        lo, hi = hi, 2 * hi
        if hi > 1e4:
            raise ConfigError(
                f"privacy.dp.target_epsilon={target_epsilon} cannot be met with {steps} steps at "
                f"sample rate {sample_rate:.3g}; raise it or train fewer steps"
            )
    while hi - lo > 0.01 * hi:
        mid = (lo + hi) / 2
        if epsilon([(mid, sample_rate, steps)], delta, accountant) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi


def max_steps(
    target_epsilon: float, delta: float, sigma: float, sample_rate: float, accountant: str
) -> int:
    """The most steps at ``sigma`` whose epsilon stays within the target (epsilon only grows
    with steps, so a bisection finds it)."""
    if epsilon([(sigma, sample_rate, 1)], delta, accountant) > target_epsilon:
        return 0
    lo, hi = 1, 2
    while epsilon([(sigma, sample_rate, hi)], delta, accountant) <= target_epsilon:
        lo, hi = hi, hi * 2
        if hi > 10**9:
            return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if epsilon([(sigma, sample_rate, mid)], delta, accountant) <= target_epsilon:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class Budget:
    """One training's privacy accounting: the plan and what has been spent."""

    cfg: DPConfig
    n: int
    """Training samples: windows (forecast) or texts (classify)."""
    sample_rate: float
    noise_multiplier: float = 0.0
    limit_steps: int | None = None
    """The most steps the budget allows (None: no target_epsilon, no limit)."""
    history: History = field(default_factory=list)

    @property
    def delta(self) -> float:
        return self.cfg.delta if self.cfg.delta is not None else default_delta(self.n)

    @classmethod
    def plan(cls, cfg: DPConfig, n: int, sample_rate: float, planned_steps: int) -> Budget:
        """The noise for the planned steps (calibrated to target_epsilon unless given) and the
        step limit the target sets."""
        if n < 2:
            raise ConfigError(f"privacy.dp needs at least 2 training samples, got {n}")
        budget = cls(cfg, n, sample_rate)
        if cfg.delta is not None and cfg.delta >= 1.0 / n:
            raise ConfigError(
                f"privacy.dp.delta={cfg.delta:g} is not below 1/n = {1.0 / n:.3g} for {n} "
                f"training samples: a mechanism that publishes one whole sample would meet it. "
                f"Use at most {default_delta(n):.3g} (the default, 1/(10 n))"
            )
        target, acc = cfg.target_epsilon, cfg.accountant
        if cfg.noise_multiplier is not None:
            budget.noise_multiplier = cfg.noise_multiplier
        else:
            assert target is not None
            budget.noise_multiplier = calibrate(
                target, budget.delta, sample_rate, planned_steps, acc
            )
        if target is not None:
            budget.limit_steps = max_steps(
                target, budget.delta, budget.noise_multiplier, sample_rate, acc
            )
        return budget

    @property
    def steps(self) -> int:
        return sum(t for _, _, t in self.history)

    def spend(self, steps: int = 1) -> None:
        """Record ``steps`` more DP-SGD steps at the planned noise and sample rate."""
        s, q = self.noise_multiplier, self.sample_rate
        if self.history and self.history[-1][:2] == (s, q):
            self.history[-1] = (s, q, self.history[-1][2] + steps)
        else:
            self.history.append((s, q, steps))

    def epsilon(self) -> float:
        return epsilon(self.history, self.delta, self.cfg.accountant)

    def exhausted(self) -> bool:
        """True when one more step would spend more than target_epsilon."""
        return self.limit_steps is not None and self.steps >= self.limit_steps
