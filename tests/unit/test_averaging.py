"""train.ema_decay: the average follows the warmed-up decay exactly, validation scores it, the
kept model is it, training steps the live weights, and a resume continues the same average."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import torch

from greentune.config import TrainConfig, build_config
from greentune.errors import ConfigError
from greentune.train.averaging import WeightAverage, averaging_callbacks, effective_decay
from greentune.train.callbacks import Callback
from greentune.train.loop import train
from tests.unit.test_loop import Interrupt, StopAt, Toy, ToyData

CFG = TrainConfig(
    epochs=3, batch_size=16, lr=0.05, checkpoint_every=4, keep_checkpoints=50, patience=None
)


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])


class Trace(Callback):
    """The live weights after every step."""

    def __init__(self) -> None:
        self.model: torch.nn.Module | None = None
        self.live: list[torch.Tensor] = []

    def on_setup(self, ctx) -> None:
        self.model = ctx.model

    def on_step_end(self, state, loss) -> None:
        assert self.model is not None
        self.live.append(_flat(self.model).clone())


def _validator(model: torch.nn.Module, data: ToyData, seen: list[torch.Tensor]):
    held = data.get(np.arange(20))

    def validate() -> float:
        seen.append(_flat(model).clone())
        return float(model.loss(model(held), held))

    return validate


def _hand_average(start: torch.Tensor, live: list[torch.Tensor], decay: float) -> torch.Tensor:
    avg = start.clone()
    for n, weights in enumerate(live, start=1):
        d = min(decay, (1 + n) / (10 + n))
        avg = d * avg + (1 - d) * weights
    return avg


def test_the_decay_warms_up_to_its_setting():
    assert effective_decay(0.999, 1) == pytest.approx(2 / 11)
    assert effective_decay(0.999, 80) == pytest.approx(81 / 90)
    assert effective_decay(0.9, 1000) == 0.9


def test_validation_scores_the_average_and_the_kept_model_is_it():
    data, model, trace, seen = ToyData(), Toy(), Trace(), []
    start = _flat(model).clone()
    ema = WeightAverage(0.9)
    res = train(
        model, data, CFG, seed=0, validate=_validator(model, data, seen), callbacks=[trace, ema]
    )
    steps_per_epoch = 7  # 100 samples in batches of 16
    assert len(trace.live) == 3 * steps_per_epoch and len(seen) == 4
    # what each validation saw is the hand-computed average of the live weights up to it
    assert torch.equal(seen[0], start)
    for epoch in range(3):
        done = trace.live[: (epoch + 1) * steps_per_epoch]
        assert torch.allclose(seen[epoch + 1], _hand_average(start, done, 0.9), atol=1e-6)
    # the averaged weights differ from the live ones they were validated in place of
    assert not torch.allclose(seen[-1], trace.live[-1], atol=1e-4)
    # the model handed back is the average at the best validation
    assert torch.allclose(_flat(model), seen[res.state.best_epoch + 1], atol=1e-7)
    assert torch.allclose(ema.average[0].reshape(-1), seen[-1][: ema.average[0].numel()])


def test_training_steps_the_live_weights_as_without_the_average():
    data = ToyData()
    plain_model, avg_model = Toy(), Toy()
    plain = train(plain_model, data, CFG, seed=0, validate=_validator(plain_model, data, []))
    averaged = train(
        avg_model,
        data,
        CFG,
        seed=0,
        validate=_validator(avg_model, data, []),
        callbacks=[WeightAverage(0.9)],
    )
    assert [r["loss"] for r in averaged.state.history] == [r["loss"] for r in plain.state.history]
    # the start is validated before any step: the average is the start itself
    assert averaged.state.val_history[0]["val_loss"] == plain.state.val_history[0]["val_loss"]
    # the average is smoother, so it scores differently from the live weights after epoch 1
    assert averaged.state.val_history[1]["val_loss"] != plain.state.val_history[1]["val_loss"]


def test_without_validation_the_trained_model_is_the_average():
    data, model, trace = ToyData(), Toy(), Trace()
    start = _flat(model).clone()
    train(model, data, CFG, seed=0, callbacks=[trace, WeightAverage(0.8)])
    assert torch.allclose(_flat(model), _hand_average(start, trace.live, 0.8), atol=1e-6)


def test_a_resumed_run_continues_the_same_average(tmp_path):
    data = ToyData()
    full_model, full_seen = Toy(), []
    train(
        full_model,
        data,
        CFG,
        seed=3,
        validate=_validator(full_model, data, full_seen),
        callbacks=[WeightAverage(0.9)],
    )
    ckpt = tmp_path / "ckpt"
    part = Toy()
    with pytest.raises(Interrupt):
        train(
            part,
            data,
            CFG,
            seed=3,
            validate=_validator(part, data, []),
            checkpoint_dir=ckpt,
            callbacks=[WeightAverage(0.9), StopAt(11)],
        )
    resumed_model, resumed_seen, ema = Toy(), [], WeightAverage(0.9)
    train(
        resumed_model,
        data,
        CFG,
        seed=3,
        validate=_validator(resumed_model, data, resumed_seen),
        checkpoint_dir=ckpt,
        resume=True,
        callbacks=[ema],
    )
    assert ema.updates == 21
    # the checkpoint before step 11 is at the end of epoch 1 (step 7 + 1 at step 8): the
    # resumed run validates epochs 2 and 3 with the same averages as the uninterrupted one
    assert torch.allclose(resumed_seen[-1], full_seen[-1], atol=1e-6)
    assert torch.allclose(_flat(resumed_model), _flat(full_model), atol=1e-6)


def test_a_checkpoint_from_another_set_up_is_refused():
    ema = WeightAverage(0.9)
    ema.load_state_dict({"updates": 3, "average": [torch.zeros(2)]})
    with pytest.raises(Exception, match="does not match the model's trainable tensors"):
        train(Toy(), ToyData(), CFG, seed=0, callbacks=[ema])


def test_bad_settings_are_refused_with_the_key():
    with pytest.raises(ConfigError, match=r"train.ema_decay must be in \[0, 1\)"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ConfigError, match="train.ema_decay must be in"):
        TrainConfig(ema_decay=-0.1)
    assert averaging_callbacks(build_config(overrides=[])) == []
    cfg = build_config(overrides=["train.ema_decay=0.999", "peft.method=adalora"])
    with pytest.raises(ConfigError, match="AdaLoRA prunes ranks"):
        averaging_callbacks(cfg)
    (cb,) = averaging_callbacks(build_config(overrides=["train.ema_decay=0.999"]))
    assert str(cb) == "an average of the trainable weights (train.ema_decay=0.999)"


def test_fsdp_with_several_processes_is_refused_before_any_data(monkeypatch):
    cfg = build_config(overrides=["train.ema_decay=0.99", "train.distributed_strategy=fsdp"])
    assert len(averaging_callbacks(cfg)) == 1  # one process: FSDP is ignored
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="each process holds only shards"):
        averaging_callbacks(cfg)


def test_one_callback_object_trained_twice_starts_its_average_afresh():
    data, trace, ema = ToyData(), Trace(), WeightAverage(0.9)
    train(Toy(), data, CFG, seed=0, callbacks=[ema])
    model = Toy()
    start = _flat(model).clone()
    train(model, data, CFG, seed=0, callbacks=[trace, ema])
    assert ema.updates == 21
    assert torch.allclose(_flat(model), _hand_average(start, trace.live, 0.9), atol=1e-6)


def test_federate_refuses_it():
    from greentune.privacy.federated.partitions import check_model

    with pytest.raises(ConfigError, match="leave it at 0 for greentune federate"):
        check_model(build_config(overrides=["train.ema_decay=0.99"]))


def test_a_run_saves_the_average_it_validated(tmp_path):
    """Through ``greentune.run``: the saved classifier is the averaged weights of its best
    validation, which differ from the live weights trained at that point."""
    import greentune as gt
    from greentune.data.text import synthetic_incidents

    class Capture(Callback):
        def __init__(self) -> None:
            self.model: torch.nn.Module | None = None
            self.validated: list[dict[str, torch.Tensor]] = []
            self.live: list[dict[str, torch.Tensor]] = []

        def on_setup(self, ctx) -> None:
            self.model = ctx.model

        def _trainable(self) -> dict[str, torch.Tensor]:
            assert self.model is not None
            return {
                n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad
            }

        def phase(self, name):  # entered after the average's swap (it comes first)
            if name.startswith("validate"):
                self.validated.append(self._trainable())
            return nullcontext()

        def on_epoch_end(self, state) -> None:
            self.live.append(self._trainable())  # the average is swapped out again by now

    path = tmp_path / "t.csv"
    synthetic_incidents(120, seed=0).to_csv(path, index=False)
    cap = Capture()
    cfg = gt.build_config(
        overrides=[
            "task=classify",
            "model.backbone=tiny-bert",
            "eval.report=false",
            "train.epochs=2",
            "train.patience=null",
            "train.ema_decay=0.9",
            "text.max_length=32",
            f"text.path={path}",
            f"output_dir={tmp_path}/runs",
            "name=c",
        ]
    )
    gt.run(cfg, echo=lambda m: None, callbacks=[cap])
    best = gt.RunDir(tmp_path / "runs" / "c").metrics.training
    saved = gt.Predictor.from_run(tmp_path / "runs" / "c").model
    assert best is not None and best.best_epoch is not None
    kept = cap.validated[best.best_epoch + 1]
    named = dict(saved.named_parameters())
    for name, value in kept.items():
        assert torch.allclose(named[name].detach(), value, atol=1e-6), name
    last = cap.live[-1]
    assert any(not torch.allclose(last[n], kept[n], atol=1e-6) for n in kept)
    assert "training with an average of the trainable weights (train.ema_decay=0.9)" in (
        (tmp_path / "runs" / "c" / "log.txt").read_text()
    )
