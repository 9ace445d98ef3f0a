"""Training callbacks: every hook fires in order, setup may wrap, validation may stop."""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from torch import nn

from greentune.config import TrainConfig, build_config
from greentune.errors import ConfigError, TrainingError
from greentune.train.callbacks import (
    CALLBACKS,
    Callback,
    CallbackContext,
    EnergyWindows,
    LossLog,
    NanGuard,
    ProgressBar,
    build_callbacks,
)
from greentune.train.loop import train


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 1)

    def forward(self, batch):
        return self.lin(batch["x"]).squeeze(-1)

    def loss(self, out, batch):
        return ((out - batch["y"]) ** 2).mean()


class ToyData:
    def __init__(self, n: int = 40, scale: float = 1.0) -> None:
        rng = np.random.default_rng(0)
        self.x = rng.normal(size=(n, 4)).astype(np.float32)
        self.y = (self.x @ np.array([1.0, -2.0, 0.5, 3.0]) * scale).astype(np.float32)

    def __len__(self) -> int:
        return len(self.x)

    def get(self, idx):
        return {"x": torch.from_numpy(self.x[idx]), "y": torch.from_numpy(self.y[idx])}


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_setup(self, ctx) -> None:
        self.events.append(f"setup total={ctx.total_steps} done={ctx.state.step}")

    @contextmanager
    def phase(self, name):
        self.events.append(f"enter {name}")
        yield
        self.events.append(f"exit {name}")

    def on_step_end(self, state, loss) -> None:
        self.events.append(f"step {state.step}")

    def on_validation(self, state, val_loss) -> bool:
        self.events.append(f"validation {state.val_history[-1]['epoch']}")
        return False

    def on_epoch_end(self, state) -> None:
        self.events.append(f"epoch-end {state.epoch}")

    def on_end(self, state) -> None:
        self.events.append(f"end finished={state.finished}")


def _validate(model, data):
    held = data.get(np.arange(10))
    return lambda: float(model.loss(model(held), held))


def test_every_hook_fires_in_order():
    model, data, rec = Toy(), ToyData(), Recorder()
    cfg = TrainConfig(epochs=2, batch_size=20, lr=0.01, patience=None)
    train(model, data, cfg, seed=0, validate=_validate(model, data), callbacks=[rec])
    assert rec.events == [
        "setup total=4 done=0",
        "enter validate-init",
        "exit validate-init",
        "validation -1",
        "enter epoch-0",
        "step 1",
        "step 2",
        "exit epoch-0",
        "enter validate-0",
        "exit validate-0",
        "validation 0",
        "epoch-end 1",
        "enter epoch-1",
        "step 3",
        "step 4",
        "exit epoch-1",
        "enter validate-1",
        "exit validate-1",
        "validation 1",
        "epoch-end 2",
        "end finished=True",
    ]


def test_on_validation_can_stop_training():
    class StopAfterFirstEpoch(Callback):
        def on_validation(self, state, val_loss):
            return state.epoch >= 1

    model, data = Toy(), ToyData()
    cfg = TrainConfig(epochs=5, batch_size=20, lr=0.01, patience=None)
    res = train(
        model, data, cfg, seed=0, validate=_validate(model, data), callbacks=[StopAfterFirstEpoch()]
    )
    assert res.state.epoch == 1 and res.state.step == 2 and res.state.stopped_early


def test_on_setup_may_wrap_the_batches_and_the_optimizer():
    class Doubled:
        """Wraps the training data: every target times two (what augmentation would do)."""

        def __init__(self, base) -> None:
            self.base = base

        def __len__(self) -> int:
            return len(self.base)

        def get(self, idx):
            batch = self.base.get(idx)
            return {**batch, "y": batch["y"] * 2}

    class Wrap(Callback):
        def __init__(self) -> None:
            self.steps = 0

        def on_setup(self, ctx) -> None:
            ctx.batches = Doubled(ctx.batches)
            inner = ctx.optimizer

            class Counting:
                def __getattr__(self, name):
                    return getattr(inner, name)

                def step(self_inner):
                    self.steps += 1
                    inner.step()

            ctx.optimizer = Counting()

    cfg = TrainConfig(epochs=30, batch_size=20, lr=0.05, patience=None, clip_norm=None)
    wrapped, plain = Wrap(), Toy()
    train(plain, ToyData(scale=2.0), cfg, seed=0)
    model = Toy()
    train(model, ToyData(), cfg, seed=0, callbacks=[wrapped])
    assert wrapped.steps == 60
    # training on doubled targets equals training on data whose targets are doubled
    torch.testing.assert_close(model.lin.weight, plain.lin.weight)


def test_on_end_runs_when_training_raises():
    class Boom(Callback):
        def on_step_end(self, state, loss):
            if state.step == 3:
                raise RuntimeError("boom")

    rec = Recorder()
    with pytest.raises(RuntimeError, match="boom"):
        train(Toy(), ToyData(), TrainConfig(epochs=2, batch_size=10), 0, callbacks=[Boom(), rec])
    assert rec.events[-1] == "end finished=False"
    assert "step 3" not in rec.events  # Boom came first and raised


def test_early_stopping_is_a_callback_that_counts_bad_epochs():
    """A validation that never improves after the start: patience epochs, then stop."""
    model, data = Toy(), ToyData()
    calls = iter([1.0, 2.0, 3.0, 4.0, 5.0])
    cfg = TrainConfig(epochs=5, batch_size=20, lr=0.01, patience=2)
    res = train(model, data, cfg, seed=0, validate=lambda: next(calls))
    assert res.state.epoch == 2 and res.state.stopped_early and res.state.best_epoch == -1


def test_energy_windows_wrap_each_phase():
    names: list[str] = []

    @contextmanager
    def window(name):
        names.append(name)
        yield

    model, data = Toy(), ToyData()
    cfg = TrainConfig(epochs=1, batch_size=20, patience=None)
    train(model, data, cfg, 0, validate=_validate(model, data), callbacks=[EnergyWindows(window)])
    assert names == ["validate-init", "epoch-0", "validate-0"]


def test_progress_bar_starts_updates_and_stops():
    class Bar:
        def __init__(self) -> None:
            self.calls: list[tuple] = []

        def start(self, total_steps, done):
            self.calls.append(("start", total_steps, done))

        def update(self, step, loss, epoch):
            self.calls.append(("update", step, epoch))

        def stop(self):
            self.calls.append(("stop",))

    bar = Bar()
    train(Toy(), ToyData(), TrainConfig(epochs=1, batch_size=20), 0, callbacks=[ProgressBar(bar)])
    assert bar.calls == [("start", 2, 0), ("update", 1, 0), ("update", 2, 0), ("stop",)]


def test_loss_log_writes_every_n_steps_and_each_validation():
    lines: list[str] = []
    model, data = Toy(), ToyData()
    cfg = TrainConfig(epochs=1, batch_size=10, patience=None)
    train(
        model, data, cfg, 0, validate=_validate(model, data), callbacks=[LossLog(lines.append, 3)]
    )
    steps = [line for line in lines if line.startswith("step")]
    assert [s.split(" ")[1] for s in steps] == ["3/4", "4/4"]
    assert lines[0].startswith("validation at step 0: loss") and "(best so far)" in lines[0]
    assert lines[-1].startswith("validation at step 4")


def test_nan_guard_stops_a_diverged_run_with_a_clear_error():
    class Exploding(Toy):
        def loss(self, out, batch):
            return super().loss(out, batch) * float("nan")

    with pytest.raises(TrainingError, match=r"diverged: the loss is nan at step 1 \(epoch 0\)"):
        train(
            Exploding(), ToyData(), TrainConfig(epochs=1, batch_size=10), 0, callbacks=[NanGuard()]
        )


def test_callbacks_by_name_from_the_config():
    cfg = build_config(overrides=["train.callbacks=[loss-log, nan-guard]", "train.log_every=7"])
    built = build_callbacks(CallbackContext(cfg, print))
    assert [type(c) for c in built] == [LossLog, NanGuard] and built[0].every == 7
    assert CALLBACKS.names() == ["loss-log", "nan-guard"]
    bad = build_config(overrides=["train.callbacks=[loss-logs]"])
    with pytest.raises(ConfigError, match="unknown train.callbacks entry 'loss-logs'; valid"):
        build_callbacks(CallbackContext(bad, print))


def test_every_named_callback_runs_in_a_real_loop():
    cfg = build_config(overrides=["train.callbacks=[loss-log, nan-guard]"])
    lines: list[str] = []
    for cb in build_callbacks(CallbackContext(cfg, lines.append)):
        res = train(Toy(), ToyData(), TrainConfig(epochs=1, batch_size=10), 0, callbacks=[cb])
        assert all(math.isfinite(r["loss"]) for r in res.state.history)
    assert lines  # loss-log wrote
