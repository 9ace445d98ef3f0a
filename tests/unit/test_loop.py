import math

import numpy as np
import pytest
import torch
from torch import nn

from greentune.config import TrainConfig
from greentune.train.callbacks import Callback
from greentune.train.checkpoint import list_checkpoints
from greentune.train.loop import total_optimizer_steps, train


class Toy(nn.Module):
    """y = w.x + noise, with dropout so that RNG state matters for resume."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(8, 16)
        self.out = nn.Linear(16, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, batch):
        return self.out(self.drop(torch.relu(self.lin(batch["x"])))).squeeze(-1)

    def loss(self, out, batch):
        return ((out - batch["y"]) ** 2).mean()


class ToyData:
    def __init__(self, n: int = 100) -> None:
        g = np.random.default_rng(1)
        self.x = g.normal(size=(n, 8)).astype(np.float32)
        self.y = (self.x @ np.arange(8) / 8 + 0.1 * g.normal(size=n)).astype(np.float32)

    def __len__(self) -> int:
        return len(self.x)

    def get(self, idx):
        return {"x": torch.from_numpy(self.x[idx]), "y": torch.from_numpy(self.y[idx])}


class Interrupt(Exception):
    pass


class StopAt(Callback):
    """A callback that kills the run after a given step, like a crash or SIGKILL."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, state, loss):
        if state.step == self.step:
            raise Interrupt


def losses(result):
    return [r["loss"] for r in result.state.history]


def test_loss_goes_down_and_steps_are_counted():
    cfg = TrainConfig(epochs=3, batch_size=10, lr=0.01, patience=None)
    res = train(Toy(), ToyData(), cfg, seed=0)
    assert res.state.step == 30 == total_optimizer_steps(100, cfg)
    assert res.state.samples == 300
    assert np.mean(losses(res)[-5:]) < 0.5 * np.mean(losses(res)[:5])


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_resume_gives_the_same_loss_curve(tmp_path, dropout):
    cfg = TrainConfig(
        epochs=3, batch_size=16, lr=0.01, checkpoint_every=4, keep_checkpoints=50, patience=None
    )
    data = ToyData()
    held_out = data.get(np.arange(20))

    def validator(model):  # a real validation loss, so the best snapshot depends on training
        return lambda: float(model.loss(model(held_out), held_out))

    full_model = Toy(dropout)
    full = train(full_model, data, cfg, seed=3, validate=validator(full_model))
    ckpt = tmp_path / "ckpt"
    part_model = Toy(dropout)
    with pytest.raises(Interrupt):
        train(
            part_model,
            data,
            cfg,
            seed=3,
            validate=validator(part_model),
            checkpoint_dir=ckpt,
            callbacks=[StopAt(11)],
        )
    assert [p.name for p in list_checkpoints(ckpt)] == [
        "step-00000004.pt",
        "step-00000007.pt",
        "step-00000008.pt",
    ]
    resumed_model = Toy(dropout)
    resumed = train(
        resumed_model,
        data,
        cfg,
        seed=3,
        validate=validator(resumed_model),
        checkpoint_dir=ckpt,
        resume=True,
    )
    assert len(losses(resumed)) == len(losses(full)) == 21
    assert losses(resumed) == pytest.approx(losses(full), rel=0, abs=1e-7)
    assert resumed.state.best_epoch == full.state.best_epoch
    for (k, a), b in zip(
        resumed_model.state_dict().items(), full_model.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), k  # the same best weights come back


def test_gradient_accumulation_matches_a_big_batch():
    data = ToyData(96)
    big = train(Toy(), data, TrainConfig(epochs=1, batch_size=32, lr=0.05, clip_norm=None), seed=0)
    acc = train(
        Toy(),
        data,
        TrainConfig(epochs=1, batch_size=8, grad_accum=4, lr=0.05, clip_norm=None),
        seed=0,
    )
    assert acc.state.step == big.state.step == 3
    # permutation is the same, and 4 micro-batches of 8 average to the batch of 32
    for a, b in zip(acc.state.history, big.state.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_early_stopping_restores_the_best_epoch():
    vals = iter([5.0, 3.0, 1.0, 2.0, 2.5, 9.0, 9.0])  # the first is the starting point
    model = Toy()
    snapshots = []

    def validate():
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(vals)

    res = train(
        model,
        ToyData(),
        TrainConfig(epochs=6, batch_size=50, lr=0.01, patience=2),
        seed=0,
        validate=validate,
    )
    assert res.state.stopped_early and res.state.best_epoch == 1 and res.state.epoch == 4
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[2][k])
    assert [r["epoch"] for r in res.state.val_history] == [-1, 0, 1, 2, 3]


def test_the_starting_point_wins_when_training_never_improves():
    model = Toy()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    vals = iter([1.0, 2.0, 3.0])
    cfg = TrainConfig(epochs=5, batch_size=50, lr=0.01, patience=2)
    res = train(model, ToyData(), cfg, seed=0, validate=lambda: next(vals))
    assert res.state.best_epoch == -1 and res.state.stopped_early and res.state.step == 4
    for k, v in model.state_dict().items():
        assert torch.equal(v, start[k])


@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "adafactor"])
@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_optimizers_and_schedules(optimizer, schedule):
    cfg = TrainConfig(
        epochs=2, batch_size=20, lr=0.01, optimizer=optimizer, schedule=schedule, warmup_ratio=0.2
    )
    res = train(Toy(), ToyData(), cfg, seed=0)
    lrs = [r["lr"] for r in res.state.history]
    assert lrs[0] == pytest.approx(0.01 * 1 / 2)  # warmup: 2 of 10 steps
    assert max(lrs) == pytest.approx(0.01)
    if schedule == "constant":
        assert lrs[-1] == pytest.approx(0.01)
    else:
        assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(math.isfinite(v) for v in losses(res))


def test_max_steps_stops_mid_epoch_and_that_model_is_validated():
    vals = iter([2.0, 1.0])  # the starting point, then the model after 7 steps
    cfg = TrainConfig(epochs=5, batch_size=10, max_steps=7)
    model = Toy()
    res = train(model, ToyData(), cfg, seed=0, validate=lambda: next(vals))
    assert res.state.step == 7 and res.state.samples == 70
    assert res.state.best_epoch == 0 and res.state.val_history[-1]["step"] == 7
    assert not torch.equal(model.lin.weight, Toy().lin.weight)  # trained weights kept


def test_adalora_trains_through_the_loop():
    """AdaLoRA's rank allocation reads gradients after the optimizer step: over 10 steps its
    budget falls from init_r = 8 to target_r = 4 ranks per adapted matrix, and the ranks it
    keeps are the only ones left in the singular values (lora_E)."""
    from greentune.config import ModelConfig, PeftConfig
    from greentune.models.backbone import load_backbone
    from greentune.tuning.methods import MethodContext, apply_method, method_callbacks

    torch.manual_seed(0)
    bb = load_backbone(ModelConfig(backbone="tiny-bert"), keep_word_embeddings=False)
    bb = apply_method(bb, PeftConfig(method="adalora"), MethodContext(total_steps=10))

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bb, self.proj = bb, nn.Linear(8, 32)

        def forward(self, batch):
            h = self.bb(inputs_embeds=self.proj(batch["x"]).unsqueeze(1)).last_hidden_state
            return h[:, 0, 0]

        def loss(self, out, batch):
            return ((out - batch["y"]) ** 2).mean()

    allocator = bb.base_model.rankallocator
    modules = [f"encoder.layer.{i}.attention.self.{m}" for i in (0, 1) for m in ("query", "value")]
    assert allocator.init_bgt == 8 * 4 and allocator.target_bgt == 4 * 4  # r x 4 matrices
    budgets: list[int] = []
    (callback,) = method_callbacks(bb)
    update = callback.update
    callback.update = lambda step: (
        budgets.append(allocator.budget_schedule(step)[0]),
        update(step),
    )
    res = train(
        Wrap(), ToyData(), TrainConfig(epochs=1, batch_size=10), seed=0, callbacks=[callback]
    )
    assert res.state.step == 10 and all(math.isfinite(v) for v in losses(res))
    # called once per step; the cubic schedule from 32 ranks (warm-up: step 1) down to 16
    assert budgets == [32, 26, 21, 18, 17, 16, 16, 16, 16, 16]
    pattern = bb.peft_config["default"].rank_pattern  # set by the final allocation (step 8)
    assert sorted(pattern) == [f"{m}.lora_E.default" for m in modules]
    assert sum(sum(keep) for keep in pattern.values()) == 16
    for name, p in bb.named_parameters():
        if "lora_E" in name:  # the pruned ranks' singular values are zero, the others trained
            keep = torch.tensor(pattern[name.removeprefix("base_model.model.")])
            assert torch.all(p.detach().view(-1)[~keep] == 0) and torch.all(p.view(-1)[keep] != 0)


def test_bf16_autocast_runs_where_asked():
    """precision=bf16: the forward pass computes in bfloat16 (autocast), the weights and their
    updates stay float32; fp32 computes in float32."""
    from greentune.train.loop import make_accelerator

    seen: dict[str, set[tuple[torch.dtype, torch.dtype]]] = {}
    for precision in ("bf16", "fp32"):
        cfg = TrainConfig(epochs=1, batch_size=20, precision=precision)
        assert make_accelerator(cfg).mixed_precision == ("no" if precision == "fp32" else "bf16")
        model, dtypes = Toy(), set()
        for layer in (model.lin, model.out):
            layer.register_forward_hook(lambda m, i, o, d=dtypes: d.add((i[0].dtype, o.dtype)))
        res = train(model, ToyData(), cfg, seed=0)
        assert res.state.step == 5 and all(math.isfinite(v) for v in losses(res))
        assert model.lin.weight.dtype == torch.float32 and model.lin.weight.grad is None
        seen[precision] = dtypes
    # lin takes the float32 batch, out takes lin's bfloat16 output; both compute in bfloat16
    assert seen["bf16"] == {(torch.float32, torch.bfloat16), (torch.bfloat16, torch.bfloat16)}
    assert seen["fp32"] == {(torch.float32, torch.float32)}


def test_auto_precision_is_fp32_on_cpu():
    from greentune.train.loop import make_accelerator

    if torch.cuda.is_available():
        pytest.skip("CPU-only rule")
    assert make_accelerator(TrainConfig()).mixed_precision == "no"


def _scored(losses_and_accuracies, model, snapshots):
    """A validate that returns scores as a classifier's does (and a MAPE, lowest where the
    accuracy is highest: minimised as it is, not as one minus it), snapshotting the model."""
    rows = iter(losses_and_accuracies)

    def validate():
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        loss, accuracy = next(rows)
        return {
            "val_loss": loss,
            "val_accuracy": accuracy,
            "val_macro_f1": accuracy - 0.1,
            "val_mape": 10 * (1 - accuracy),
        }

    return validate


# the start, then 4 epochs: the loss is lowest after epoch 0, the accuracy highest after
# epoch 2 (and again, a tie, after epoch 3: the first best wins)
SCORES = [(1.0, 0.50), (0.40, 0.70), (0.45, 0.75), (0.50, 0.80), (0.60, 0.80)]


@pytest.mark.parametrize(("select_on", "best_epoch"), [("loss", 0), ("accuracy", 2), ("mape", 2)])
def test_select_on_keeps_the_epoch_with_the_best_score(select_on, best_epoch):
    from greentune.train.state import LoopResult

    model, snapshots = Toy(), []
    cfg = TrainConfig(epochs=4, batch_size=50, lr=0.01, patience=None, select_on=select_on)
    res = train(model, ToyData(), cfg, seed=0, validate=_scored(SCORES, model, snapshots))
    assert isinstance(res, LoopResult) and res.state.best_epoch == best_epoch
    for k, v in model.state_dict().items():  # the kept weights are that validation's
        assert torch.equal(v, snapshots[best_epoch + 1][k])
    assert [r["val_accuracy"] for r in res.state.val_history] == [a for _, a in SCORES]
    summary = res.summary()
    assert summary.selected_on == select_on
    assert summary.best_val_loss == SCORES[best_epoch + 1][0]  # the kept model's loss


def test_select_on_drives_early_stopping():
    # accuracy stalls after epoch 0 while the loss keeps falling: patience 1 on accuracy stops
    # after epoch 1, where patience 1 on the loss would train on
    scores = [(1.0, 0.5), (0.8, 0.7), (0.6, 0.7), (0.5, 0.7), (0.4, 0.7)]
    model = Toy()
    cfg = TrainConfig(epochs=4, batch_size=50, lr=0.01, patience=1, select_on="accuracy")
    res = train(model, ToyData(), cfg, seed=0, validate=_scored(scores, model, []))
    assert res.state.stopped_early and res.state.epoch == 2 and res.state.best_epoch == 0
    cfg = TrainConfig(epochs=4, batch_size=50, lr=0.01, patience=1, select_on="loss")
    res = train(Toy(), ToyData(), cfg, seed=0, validate=_scored(scores, Toy(), []))
    assert not res.state.stopped_early and res.state.best_epoch == 3


def test_select_on_a_score_the_validation_does_not_report_is_refused():
    from greentune.errors import ConfigError

    cfg = TrainConfig(epochs=1, batch_size=50, lr=0.01, select_on="accuracy")
    with pytest.raises(ConfigError) as err:
        train(Toy(), ToyData(), cfg, seed=0, validate=lambda: 1.0)
    assert str(err.value) == (
        "train.select_on=accuracy: this task's validation reports loss only; set "
        "train.select_on to one of those (loss always works)"
    )


def test_the_trained_line_says_what_training_added_to_the_start():
    from greentune.train.state import LoopResult, LoopState

    curve = [
        {"epoch": -1, "step": 0, "val_loss": 0.0125},
        {"epoch": 0, "step": 10, "val_loss": 0.0100},
        {"epoch": 1, "step": 20, "val_loss": 0.0110},
    ]
    state = LoopState(step=20, best_val=0.01, best_epoch=0, val_history=curve, train_s=2.0)
    state.samples, state.stop_reason = 400, "early stopping"
    assert LoopResult(state, 10, 100).trained_line() == (
        "trained 20 steps in 2.0 s (200 samples/s), best epoch 0 (validation loss 0.01, 20.0 % "
        "below the start's 0.0125), stopped by early stopping"
    )
    kept = LoopState(step=10, best_val=0.0125, best_epoch=-1, val_history=curve[:2], train_s=1.0)
    assert LoopResult(kept, 10, 100).trained_line() == (
        "trained 10 steps in 1.0 s (0 samples/s), no epoch beat the starting point on "
        "validation (loss 0.0125): kept it"
    )
    # chosen on another score than the loss: the line says which, and its value against the start's
    scored = [dict(r, val_mape=m) for r, m in zip(curve, (2.9, 3.1, 2.8), strict=True)]
    by_mape = LoopState(step=20, best_val=2.8, best_epoch=1, val_history=scored, train_s=2.0)
    assert (
        LoopResult(by_mape, 10, 100, select_on="mape")
        .trained_line()
        .endswith(
            "best epoch 1 (validation loss 0.011, 12.0 % below the start's 0.0125), chosen on "
            "validation mape (2.8; the start's 2.9)"
        )
    )
    start_kept = LoopState(step=20, best_val=2.9, best_epoch=-1, val_history=scored, train_s=2.0)
    assert (
        LoopResult(start_kept, 10, 100, select_on="mape")
        .trained_line()
        .endswith(
            "no epoch beat the starting point on validation (loss 0.0125): kept it, chosen on "
            "validation mape (2.9)"
        )
    )
    # a loop without a starting validation (none recorded) says only the epoch
    bare = LoopState(step=10, best_val=0.01, best_epoch=0, val_history=curve[1:2], train_s=1.0)
    assert LoopResult(bare, 10, 100).trained_line().endswith("best epoch 0")
