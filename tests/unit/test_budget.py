"""Training budgets: time and energy stop the loop at the budget and keep the best model."""

from __future__ import annotations

import pytest
import torch

from greentune.config import TrainConfig
from greentune.errors import ConfigError
from greentune.train.budget import AUTO_MIN_S, Budget, auto_budget_s, budget_callbacks
from greentune.train.loop import train
from tests.unit.test_callbacks import Toy, ToyData, _validate


class Ticks:
    """A clock (or joule counter) that advances by ``per_call`` each time it is read."""

    def __init__(self, per_call: float) -> None:
        self.now, self.per_call = 0.0, per_call

    def __call__(self) -> float:
        self.now += self.per_call
        return self.now


def _run(cfg: TrainConfig, budget: Budget):
    model, data = Toy(), ToyData()
    return model, train(
        model, data, cfg, seed=0, validate=_validate(model, data), callbacks=[budget]
    )


def test_time_budget_stops_after_the_step_that_spends_it_and_keeps_the_best():
    lines: list[str] = []
    cfg = TrainConfig(epochs=10, batch_size=10, lr=0.01, patience=None, budget_s=5.0)
    # setup reads the clock once (t0 = 1); each step's check reads it once more: step k at 1 + k
    budget = Budget(cfg, None, lines.append, clock=Ticks(1.0))
    _, res = _run(cfg, budget)
    assert res.state.step == 5 and res.state.epoch == 1  # 4 steps per epoch: stopped in epoch 2
    assert res.state.stop_reason == "time budget" and budget.stopped == "time"
    assert lines == [
        "train: stopped at the time budget (5 s of train.budget_s=5) after step 5 (epoch 1); "
        "the best model so far is kept"
    ]
    # the model stopped mid-epoch was validated, so it competed for best
    assert res.state.val_history[-1]["step"] == 5


def test_energy_budget_reads_the_meter():
    cfg = TrainConfig(
        epochs=10, batch_size=10, lr=0.01, patience=None, budget_s=None, budget_wh=1.0
    )
    # 900 J per reading: setup at 900 J, then step k at 900 (k + 1) J; 1 Wh = 3600 J at step 4
    budget = Budget(cfg, Ticks(900.0), lambda _: None)
    _, res = _run(cfg, budget)
    assert res.state.step == 4 and res.state.stop_reason == "energy budget"
    assert budget.state_dict()["spent_wh"] == pytest.approx(1.25)  # one more reading


def test_spending_carries_over_a_resume():
    cfg = TrainConfig(epochs=10, batch_size=10, lr=0.01, patience=None, budget_s=5.0)
    budget = Budget(cfg, None, lambda _: None, clock=Ticks(1.0))
    budget.load_state_dict({"spent_s": 3.0, "spent_wh": 0.0})
    _, res = _run(cfg, budget)
    assert res.state.step == 2


def test_no_budget_no_callback_and_bad_budgets_refused():
    assert budget_callbacks(TrainConfig(budget_s=None), None, print) == []
    with pytest.raises(ConfigError, match="train.budget_wh needs the energy meter"):
        budget_callbacks(TrainConfig(budget_wh=2.0), None, print)
    with pytest.raises(ConfigError, match=r"train.budget_s must be > 0"):
        TrainConfig(budget_s=0)
    assert auto_budget_s(10, TrainConfig()) == AUTO_MIN_S
    assert auto_budget_s(10_000, TrainConfig(batch_size=32)) == pytest.approx(16_000)


def test_an_unreached_budget_changes_nothing():
    cfg = TrainConfig(epochs=3, batch_size=10, lr=0.01, patience=None)
    torch.manual_seed(0)
    _, free = _run(cfg, Budget(TrainConfig(budget_s=None), None, print))
    _, capped = _run(cfg, Budget(cfg, None, print))
    assert capped.state.step == free.state.step == 12 and capped.state.stop_reason is None
    assert capped.state.history == free.state.history
