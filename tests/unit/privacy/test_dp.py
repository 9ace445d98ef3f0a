"""DP-SGD through the training callbacks: per-sample gradients are right, no noise and no
clipping give the non-private run step for step, the budget stops training, a resumed run
goes on spending from its checkpoint, and what Opacus cannot do is refused in one sentence."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from greentune.config import DPConfig, TrainConfig, load_config
from greentune.data.windows import prepare_forecast_data
from greentune.distributed import ranks
from greentune.errors import CheckpointError, ConfigError, ModelError
from greentune.privacy.accounting import Budget
from greentune.privacy.dp import DPTraining, PoissonBatches, private_config
from greentune.privacy.per_sample import dp_optimizer, per_sample_gradients, wrap_model
from greentune.tasks import TASKS
from greentune.tasks.forecast.batches import make_batches
from greentune.tasks.forecast.model import build_model
from greentune.train.callbacks import Callback
from greentune.train.loop import train
from greentune.train.order import epoch_order
from tests.conftest import make_series, series_overrides
from tests.unit.test_loop import Toy, ToyData, losses

QUIET = {"log": lambda m: None}


def _forecaster(tmp_path: Path, *extra: str):
    csv = tmp_path / "load.csv"
    make_series().to_csv(csv, index=False)
    cfg = load_config(None, [*series_overrides(csv, tmp_path / "runs"), *extra])
    cfg = TASKS.get("forecast").resolve_config(cfg)
    data = prepare_forecast_data(cfg.data)
    model, tok = build_model(cfg, data, 10)
    return model, make_batches(cfg, data, data.train.origins, tok)


@pytest.mark.parametrize("backbone", ["tiny-bert", "tiny-gpt2"])
@pytest.mark.parametrize("encoder", ["patch", "text"])
def test_per_sample_gradients_equal_a_per_sample_loop(tmp_path, backbone, encoder):
    model, batches = _forecaster(
        tmp_path, f"model.backbone={backbone}", f"model.encoder={encoder}", "peft.method=lora"
    )
    wrapped = wrap_model(model, batches, **QUIET)
    assert wrapped.frozen == []
    # the linear layers keep factors (the head, the skip path's bias, LoRA's A and B, the patch
    # embedding), Opacus computes the rest (GPT-2's Conv1D layers)
    assert {model.head, model.skip} <= {f.module for f in wrapped.factored}
    batch = batches.get(np.arange(5))
    model.loss(wrapped.module(batch), batch).backward()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    per_sample = {n: g.clone() for n, g in per_sample_gradients(wrapped, model).items()}
    assert per_sample.keys() == params.keys() and len(params) > 0
    wrapped.close()
    for i in range(5):
        model.zero_grad()
        one = {k: v[i : i + 1] for k, v in batch.items()}
        model.loss(model(one), one).backward()
        for name, p in params.items():
            torch.testing.assert_close(per_sample[name][i], p.grad, atol=1e-6, rtol=1e-4)


class TwoCalls(nn.Module):
    """One linear layer called twice before one backward (as R-Drop's two passes are), once on
    a sequence of 3 tokens and once on a flat input: its norm is the ghost norm (3 + 1 tokens
    of 8 + 16 features cost less than 8 x 16)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(8, 16)

    def forward(self, batch):
        x = batch["x"]
        tokens = self.lin(torch.stack([x, 2 * x, -x], dim=1)).sum(1)
        return (tokens * self.lin(x)).mean(-1)

    def loss(self, out, batch):
        return ((out - batch["y"]) ** 2).mean()


def _one_step(
    model: nn.Module, batches: Any, sigma: float = 0.0, max_norm: float = 1e-3, factor: bool = True
) -> tuple[Any, list[nn.Parameter], Any]:
    """``model`` wrapped, its trainable tensors, and a DP optimizer over them (SGD at lr 1, an
    expected batch of 6) with its first part begun: a forward and backward, then pre_step."""
    wrapped = wrap_model(model, batches, **QUIET, factor=factor)
    params = [p for p in model.parameters() if p.requires_grad]
    budget = Budget(DPConfig(noise_multiplier=sigma), 8, 0.5, noise_multiplier=sigma)
    dp = DPConfig(max_grad_norm=max_norm)
    opt = dp_optimizer(torch.optim.SGD(params, lr=1.0), budget, dp, 6.0, 0, wrapped.factored)
    opt.next_part(False)
    return wrapped, params, opt


def _clipped_step(model: nn.Module, batches: Any, factor: bool) -> dict[str, torch.Tensor]:
    """Each trainable tensor's gradient after one DP step of 6 samples, without noise and with
    clipping that binds."""
    wrapped, _, opt = _one_step(model, batches, factor=factor)
    batch = batches.get(np.arange(6))
    model.loss(wrapped.module(batch), batch).backward()
    assert opt.pre_step()
    wrapped.close()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("case", ["forecaster", "two-calls", "own-tensor"])
def test_factored_layers_clip_and_sum_as_opacus_does(tmp_path, case):
    if case == "forecaster":
        model, batches = _forecaster(tmp_path, "peft.method=lora")
        torch.manual_seed(1)
        with torch.no_grad():  # off the zero head and zero LoRA B, so every tensor has a gradient
            for p in model.parameters():
                if p.requires_grad:
                    p.normal_(0.0, 0.02)
    else:
        # untied: Opacus' functorch gives a tied weight wrong per-sample gradients
        model, batches = (TwoCalls() if case == "two-calls" else Holder(tie=False)), ToyData(8)
    twin, hand = copy.deepcopy(model), copy.deepcopy(model)
    factored = _clipped_step(model, batches, factor=True)
    opacus = _clipped_step(twin, batches, factor=False)
    by_hand = _clipped_by_hand(hand, batches)
    assert factored.keys() == opacus.keys() == by_hand.keys()
    for name, grad in by_hand.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(factored[name], grad, atol=1e-7, rtol=1e-4)
        torch.testing.assert_close(opacus[name], grad, atol=1e-7, rtol=1e-4)


def _clipped_by_hand(model: nn.Module, batches: Any) -> dict[str, torch.Tensor]:
    """What _clipped_step's DP step must give, from a loop over the 6 samples: each sample's
    gradient scaled to norm at most 1e-3 over every trainable tensor, summed, divided by 6."""
    batch = batches.get(np.arange(6))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(6):
        model.zero_grad()
        one = {k: v[i : i + 1] for k, v in batch.items()}
        model.loss(model(one), one).backward()
        norm = float(torch.sqrt(sum(p.grad.pow(2).sum() for p in params.values())))
        for n, p in params.items():
            total[n] += min(1.0, 1e-3 / (norm + 1e-6)) * p.grad
    return {n: t / 6.0 for n, t in total.items()}


def test_noise_is_added_when_every_tensor_is_factored():
    grads = []
    for sigma in (0.0, 1.0):
        model = Toy()  # both layers are linear: nothing is left to Opacus
        wrapped, params, opt = _one_step(model, ToyData(8), sigma=sigma, max_norm=1e9)
        assert len(wrapped.factored) == 2
        batch = ToyData(8).get(np.arange(6))
        model.loss(wrapped.module(batch), batch).backward()
        assert opt.pre_step()
        grads.append([p.grad.clone() for p in params])
        wrapped.close()
    for quiet, noisy in zip(*grads, strict=True):
        # noise of std 1e9 / 6 per coordinate: nothing of the gradient is left to see
        assert float((noisy - quiet).abs().min()) > 1.0


class WithOwnTensor(nn.Module):
    """A parent with a trainable tensor of its own (Opacus takes it whole, children included),
    a linear layer tied to another (``tie``), and one plain linear layer."""

    def __init__(self, tie: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.scale = nn.Parameter(torch.ones(8))
        self.inner = nn.Linear(8, 8)
        self.tied = nn.Linear(8, 8)
        self.twin = nn.Linear(8, 8)
        if tie:
            self.twin.weight = self.tied.weight
        self.out = nn.Linear(8, 1)

    def forward(self, x):
        x = self.inner(x * self.scale)
        return self.out(self.tied(x) + self.twin(x)).squeeze(-1)


class Holder(nn.Module):
    def __init__(self, tie: bool = True) -> None:
        super().__init__()
        self.parent = WithOwnTensor(tie)

    def forward(self, batch):
        return self.parent(batch["x"])

    def loss(self, out, batch):
        return ((out - batch["y"]) ** 2).mean()


def test_only_linear_layers_opacus_would_hook_alone_are_factored():
    from opacus import GradSampleModule

    from greentune.privacy.factored import trainable_linears

    model = Holder()
    assert trainable_linears(model, GradSampleModule.GRAD_SAMPLERS) == []  # the parent is whole
    loose = WithOwnTensor()
    loose.scale.requires_grad_(False)
    assert trainable_linears(loose, GradSampleModule.GRAD_SAMPLERS) == [loose.inner, loose.out]


def test_per_sample_gradients_that_do_not_add_up_are_refused():
    # Opacus' functorch over a module with a tied weight returns per-sample gradients whose
    # mean is not the batch's gradient: the probe catches it
    with pytest.raises(ConfigError, match=r"no correct per-sample gradient .*parent\.scale"):
        wrap_model(Holder(tie=True), ToyData(8), **QUIET)


def test_a_linear_layer_called_on_two_batch_sizes_is_one_clear_error():
    from greentune.privacy.factored import FactoredLinear

    lin = nn.Linear(4, 2)
    f = FactoredLinear(lin)
    x = torch.randn(3, 4)
    (lin(x).sum() + lin(x[:2]).sum()).backward()
    with pytest.raises(ModelError, match=r"batches of \[2, 3\] samples .*factored=false"):
        f.norms_sq()
    f.remove()


def test_factored_sums_under_bf16_autocast_are_fp32_and_near_the_fp32_ones():
    data = ToyData(8)
    grads = {}
    for dtype in (None, torch.bfloat16):
        model = Toy()
        wrapped, params, opt = _one_step(model, data, max_norm=0.05)
        batch = data.get(np.arange(6))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            out = wrapped.module(batch)
        model.loss(out.float(), batch).backward()
        assert all(c.grads.dtype == torch.float32 for f in wrapped.factored for c in f.calls)
        assert opt.pre_step()
        grads[dtype] = [p.grad.clone() for p in params]
        wrapped.close()
    for fp32, bf16 in zip(grads[None], grads[torch.bfloat16], strict=True):
        assert bf16.dtype == torch.float32
        # bf16 keeps 8 bits of mantissa: the clipped sums agree to about 1 %
        torch.testing.assert_close(bf16, fp32, atol=1e-4, rtol=3e-2)


@pytest.mark.parametrize("method", ["ia3", "adalora"])
def test_methods_opacus_cannot_see_are_refused(method):
    cfg = load_config(None, [f"peft.method={method}", "privacy.dp.target_epsilon=8"])
    with pytest.raises(
        ConfigError, match=rf"cannot train peft.method={method}: .*ParameterDict.*lora"
    ):
        private_config(TASKS.get("forecast"), cfg)


def test_full_fine_tuning_freezes_the_shared_position_table(tmp_path):
    model, batches = _forecaster(tmp_path, "peft.method=full")
    wrapped = wrap_model(model, batches, **QUIET)
    frozen = wrapped.frozen
    assert frozen == ["backbone.embeddings.position_embeddings.weight"]
    assert not dict(model.named_parameters())[frozen[0]].requires_grad
    wrapped.close()


def test_a_validator_complaint_is_one_clear_error():
    class WithBatchNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.norm = nn.Linear(8, 1), nn.BatchNorm1d(1)

        def forward(self, batch):
            return self.norm(self.lin(batch["x"])).squeeze(-1)

        def loss(self, out, batch):
            return ((out - batch["y"]) ** 2).mean()

    with pytest.raises(ConfigError, match=r"Opacus cannot train this model privately: .*BatchNorm"):
        wrap_model(WithBatchNorm(), ToyData(), **QUIET)


def test_private_config_makes_data_independent_choices():
    forecast = TASKS.get("forecast")
    cfg = private_config(forecast, load_config(None, ["privacy.dp.target_epsilon=3"]))
    assert cfg.data.scaler == "bounds" and cfg.data.bounds["Demand"] == (0.0, 12.0)
    assert cfg.model.skip_init == "seasonal"
    plain = load_config(None, [])
    assert private_config(forecast, plain) is plain


def _cfg(**kw) -> TrainConfig:
    base = {"epochs": 3, "batch_size": 16, "patience": None, "clip_norm": None, "lr": 1e-2}
    return TrainConfig(**{**base, **kw})


def _dp(cfg: DPConfig, seed: int = 0, train_cfg: TrainConfig | None = None) -> DPTraining:
    return DPTraining(cfg, train_cfg or _cfg(), seed, lambda m: None)


def test_no_noise_and_no_clipping_equal_the_non_private_run_step_for_step():
    data = ToyData(96)  # 6 full batches of 16: the same mean in both
    plain_model, dp_model = Toy(), Toy()
    plain = train(plain_model, data, _cfg(), seed=3)
    dp = DPConfig(noise_multiplier=0.0, max_grad_norm=1e9, poisson_sampling=False)
    private = train(dp_model, data, _cfg(), seed=3, callbacks=[_dp(dp)])
    np.testing.assert_allclose(losses(private), losses(plain), rtol=1e-5)
    for a, b in zip(plain_model.parameters(), dp_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_noise_and_clipping_change_the_steps():
    data = ToyData(96)
    plain = train(Toy(), data, _cfg(), seed=3)
    dp = DPConfig(noise_multiplier=1.0, max_grad_norm=0.1)
    private = train(Toy(), data, _cfg(), seed=3, callbacks=[_dp(dp)])
    assert losses(private)[0] == pytest.approx(losses(plain)[0], rel=0.5)
    assert not np.allclose(losses(private), losses(plain))


def test_the_budget_stops_training_before_it_is_exceeded():
    cb = _dp(DPConfig(target_epsilon=3.0, noise_multiplier=1.0))
    result = train(Toy(), ToyData(96), _cfg(epochs=40), seed=0, callbacks=[cb])
    budget = cb.budget
    assert budget is not None and cb.stopped_by_budget
    assert result.state.step == budget.limit_steps < 40 * 6
    assert budget.epsilon() <= 3.0
    budget.spend()
    assert budget.epsilon() > 3.0
    assert [e["epoch"] for e in cb.epochs] == list(range(len(cb.epochs)))


class Interrupt(Callback):
    def on_step_end(self, state, loss):
        if state.step == 7:
            raise KeyboardInterrupt


def test_a_resumed_run_goes_on_spending_from_its_checkpoint(tmp_path):
    dp = DPConfig(target_epsilon=20.0)
    cfg = _cfg(epochs=3, checkpoint_every=5)
    whole_cb = _dp(dp)
    whole = train(Toy(), ToyData(96), cfg, seed=1, callbacks=[whole_cb])
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(
            Toy(), ToyData(96), cfg, seed=1, checkpoint_dir=ckpt, callbacks=[_dp(dp), Interrupt()]
        )
    resumed_cb = _dp(dp)
    resumed = train(
        Toy(), ToyData(96), cfg, seed=1, checkpoint_dir=ckpt, resume=True, callbacks=[resumed_cb]
    )
    assert resumed.resumed_from_step == 6  # the checkpoint at the end of epoch 0
    assert resumed_cb.budget is not None and whole_cb.budget is not None
    assert resumed_cb.budget.steps == whole_cb.budget.steps == whole.state.step
    assert resumed_cb.budget.epsilon() == pytest.approx(whole_cb.budget.epsilon())
    # the Poisson sampler and the noise continue where they were: the same steps
    np.testing.assert_allclose(losses(resumed), losses(whole), rtol=1e-5)


def test_a_checkpoint_written_without_dp_is_not_resumed_privately(tmp_path):
    cfg = _cfg(epochs=1, checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        train(Toy(), ToyData(160), cfg, seed=1, checkpoint_dir=tmp_path, callbacks=[Interrupt()])
    with pytest.raises(CheckpointError, match="written without privacy.dp"):
        train(
            Toy(),
            ToyData(160),
            cfg,
            seed=1,
            checkpoint_dir=tmp_path,
            resume=True,
            callbacks=[_dp(DPConfig(target_epsilon=5.0))],
        )


def test_several_processes_are_refused(monkeypatch):
    monkeypatch.setattr(ranks, "world_size", lambda: 2)
    cb = _dp(DPConfig(target_epsilon=5.0))
    with pytest.raises(ConfigError, match="one process: .*without --nproc"):
        cb.on_setup(type("Ctx", (), {"sharded": False})())


def test_poisson_batches_draw_fresh_samples_and_put_empty_parts_first():
    draws = iter([np.array([0.01, 0.9, 0.02, 0.9, 0.9]), np.full(5, 0.9)])
    seen: list[list[int]] = []
    parts: list[bool] = []

    class Inner:
        def __len__(self) -> int:
            return 5

        def get(self, idx):
            seen.append(list(idx))
            return {"x": torch.zeros(len(idx))}

    batches = PoissonBatches(Inner(), 0.05, 20, 3, 2, lambda n: next(draws), parts.append)
    assert len(batches) == 20 * 3 * 2
    for _ in range(6):
        batches.get(np.arange(2))  # the loop's positions are ignored
    # step 1 drew samples 0 and 2: one stand-in part first, then one part each
    assert seen[:3] == [[0], [0], [2]] and parts[:3] == [True, False, False]
    assert parts[3:] == [True, True, True]  # step 2 drew nothing


def test_virtual_batches_equal_gradient_accumulation_without_noise():
    data, cfg = ToyData(96), _cfg(grad_accum=2)
    plain_model, dp_model = Toy(), Toy()
    plain = train(plain_model, data, cfg, seed=3)
    dp = DPConfig(noise_multiplier=0.0, max_grad_norm=1e9, poisson_sampling=False)
    private = train(dp_model, data, cfg, seed=3, callbacks=[_dp(dp, train_cfg=cfg)])
    assert len(losses(private)) == 9  # 3 steps of 2 x 16 per epoch
    np.testing.assert_allclose(losses(private), losses(plain), rtol=1e-5)
    for a, b in zip(plain_model.parameters(), dp_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_a_stand_in_samples_gradient_is_dropped():
    model = Toy()
    data = ToyData(8)
    wrapped = wrap_model(model, data, **QUIET)
    gsm = wrapped.module
    budget = Budget(DPConfig(noise_multiplier=0.0), 8, 0.5, noise_multiplier=0.0)
    params = [p for p in model.parameters() if p.requires_grad]
    sgd = torch.optim.SGD(params, lr=1.0)
    opt = dp_optimizer(sgd, budget, DPConfig(max_grad_norm=1e9), 4.0, 0, wrapped.factored)
    before = [p.detach().clone() for p in params]
    for idx, stand_in in ((np.array([5]), True), (np.array([1, 2]), False)):
        opt.next_part(stand_in)
        batch = data.get(idx)
        model.loss(gsm(batch), batch).backward()
    opt.step()
    # the step is plain SGD on samples 1 and 2 only, summed and divided by the logical batch 4
    ref = Toy()
    batch = data.get(np.array([1, 2]))
    (ref.loss(ref(batch), batch) * 2 / 4).backward()
    for p, b, r in zip(params, before, ref.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), b - r.grad, atol=1e-6, rtol=1e-5)
    wrapped.close()


def test_the_seasonal_skip_start_is_the_seasonal_naive(tmp_path):
    from greentune.tasks.forecast.skip import seasonal_skip

    csv = tmp_path / "load.csv"
    make_series().to_csv(csv, index=False)
    cfg = TASKS.get("forecast").resolve_config(
        load_config(None, series_overrides(csv, tmp_path / "runs"))
    )
    data = prepare_forecast_data(cfg.data)
    skip = seasonal_skip(data, 3, lambda m: None)
    model, _ = build_model(cfg, data, 10, skip)
    batch = make_batches(cfg, data, data.train.origins[:4], None).get(np.arange(4))
    with torch.no_grad():
        out = model(batch)
    # hourly data, 48 h of context, 24 h ahead: a week does not fit, so one day back
    expected = batch["past"][:, 24:48, 0]
    for q in range(3):
        torch.testing.assert_close(out[:, :, 0, q], expected)
    assert model.skip is not None and not model.skip.weight.requires_grad


@pytest.mark.parametrize(
    ("kind", "chosen"),
    [("trend", "1D back"), ("weekly", "7D back"), ("noise", "mean of 7D and 1D back")],
)
def test_the_seasonal_start_takes_the_period_with_the_lowest_validation_error(
    tmp_path, kind, chosen
):
    from greentune.tasks.forecast.skip import seasonal_skip

    index = pd.date_range("2021-01-04", periods=40 * 24, freq="1h")
    hours = index.hour.to_numpy()
    daily = 20 * np.sin(2 * np.pi * hours / 24)
    load = {
        # a week back is 7x as far off the trend as a day back
        "trend": 100 + daily + 0.5 * np.arange(len(index)),
        # every weekday its own level: a week back is exact
        "weekly": 100 + daily + 10 * index.day_of_week.to_numpy(),
        # independent noise: the mean of both halves the noise of the copied values
        "noise": 100 + daily + np.random.default_rng(0).normal(0, 5, len(index)),
    }[kind]
    csv = tmp_path / "load.csv"
    pd.DataFrame({"ts": index, "load_mw": load, "temp_c": 15.0}).to_csv(csv, index=False)
    overrides = [*series_overrides(csv, tmp_path / "runs"), "data.context_length=168"]
    cfg = TASKS.get("forecast").resolve_config(load_config(None, overrides))
    data = prepare_forecast_data(cfg.data)
    lines: list[str] = []
    quantiles = max(1, len(cfg.model.quantiles))
    skip = seasonal_skip(data, quantiles, lines.append)
    assert lines[0].startswith(f"skip path: the seasonal naive ({chosen}), chosen on the valid")
    for label in ("7D back", "1D back", "mean of 7D and 1D back"):
        assert f"{label} " in lines[0]  # each candidate's validation error is in the log
    model, _ = build_model(cfg, data, 10, skip)
    batch = make_batches(cfg, data, data.train.origins[:4], None).get(np.arange(4))
    with torch.no_grad():
        out = model(batch)
    day, week = batch["past"][:, 144:168, 0], batch["past"][:, 0:24, 0]
    expected = {"1D back": day, "7D back": week, "mean of 7D and 1D back": (day + week) / 2}
    for q in range(quantiles):
        torch.testing.assert_close(out[:, :, 0, q], expected[chosen])


def test_a_resumed_run_keeps_its_seasonal_start(tmp_path):
    from greentune.tasks.forecast.skip import RIDGE_FILE, ridge_skip, seasonal_skip

    csv = tmp_path / "load.csv"
    make_series().to_csv(csv, index=False)
    overrides = [*series_overrides(csv, tmp_path / "runs"), "data.context_length=168"]
    cfg = TASKS.get("forecast").resolve_config(load_config(None, overrides))
    data = prepare_forecast_data(cfg.data)
    checkpoints = tmp_path / "checkpoints"  # not made yet: a new run writes it first
    saved = checkpoints / "seasonal-skip.json"
    lines: list[str] = []
    first = seasonal_skip(data, 1, lines.append, saved)
    chosen = lines[0].split("(")[1].split(")")[0]
    assert "chosen on the validation windows" in lines[0]
    assert json.loads(saved.read_text())["label"] == chosen
    # the next start (a resume) reads the choice instead of choosing again
    other = "1D back" if chosen != "1D back" else "7D back"
    saved.write_text(json.dumps({**json.loads(saved.read_text()), "label": other}))
    again = seasonal_skip(data, 1, lines.append, saved)
    assert lines[1].startswith(f"skip path: the seasonal naive ({other}), kept from {saved}")
    assert not np.array_equal(again.fit.weight, first.fit.weight)
    # checkpoints written before the choice existed trained on the week: they keep it
    saved.unlink()
    (checkpoints / "step-00000010.pt").write_bytes(b"")
    seasonal = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, skip_init="seasonal"))
    ridge_skip(seasonal, data, lines.append, checkpoints / RIDGE_FILE)
    assert lines[2].startswith("skip path: the seasonal naive (7D back), kept: it was trained on")
    assert json.loads(saved.read_text())["label"] == "7D back"
    # a file that is not a saved choice is ignored: with checkpoints there, the week is kept
    for junk in ("[1, 2]", "{not json"):
        saved.write_text(junk)
        ridge_skip(seasonal, data, lines.append, checkpoints / RIDGE_FILE)
        assert "(7D back), kept: it was trained on" in lines[-1]
    # data that moved since (another key) does not move a trained start off its saved period
    saved.write_text(json.dumps({"label": "1D back", "key": "older data"}))
    ridge_skip(seasonal, data, lines.append, checkpoints / RIDGE_FILE)
    assert lines[-1].startswith("skip path: the seasonal naive (1D back), kept from ")


def test_coarse_steps_do_not_offer_one_period_twice():
    from types import SimpleNamespace

    from greentune.tasks.forecast.skip import seasonal_candidates

    def data(freq: str, context: int) -> Any:
        index = pd.date_range("2021-01-04", periods=60, freq=freq)
        return SimpleNamespace(frame=pd.DataFrame(index=index), context_length=context, horizon=4)

    # weekly steps: a week and a day are both one step back, so only one candidate
    assert seasonal_candidates(data("7D", 8)) == {"7D back": {1: 1.0}}
    assert seasonal_candidates(data("1D", 8)) == {
        "7D back": {7: 1.0},
        "1D back": {1: 1.0},
        "mean of 7D and 1D back": {7: 0.5, 1: 0.5},
    }
    assert seasonal_candidates(data("1D", 4)) == {"1D back": {1: 1.0}}  # a week does not fit
    assert seasonal_candidates(data("1h", 3)) == {"last value": {1: 1.0}}


def test_secure_mode_draws_from_the_operating_system():
    dp = DPConfig(noise_multiplier=1.0, max_grad_norm=0.5, secure_mode=True)
    a = train(Toy(), ToyData(96), _cfg(epochs=1), seed=3, callbacks=[_dp(dp)])
    b = train(Toy(), ToyData(96), _cfg(epochs=1), seed=3, callbacks=[_dp(dp)])
    assert len(losses(a)) == len(losses(b)) == 6
    assert losses(a) != losses(b)  # the same seed, other batches and noise


@pytest.mark.parametrize("factor", [True, False])
def test_the_probe_works_on_a_model_loaded_in_eval_mode(factor):
    # from_pretrained returns eval mode, where Opacus records no activations
    model = Toy().eval()
    wrapped = wrap_model(model, ToyData(8), **QUIET, factor=factor)
    assert wrapped.frozen == [] and not model.training
    assert len(wrapped.factored) == (2 if factor else 0)
    wrapped.close()


class LengthyData(ToyData):
    """ToyData whose samples have lengths (as texts do); records the positions asked for."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.lengths = np.arange(n) % 4
        self.asked: list[np.ndarray] = []

    def get(self, idx):
        self.asked.append(np.asarray(idx).copy())
        return super().get(idx)


def test_private_batches_are_not_grouped_by_length_and_the_log_says_so():
    data, said = LengthyData(96), []
    cfg = _cfg(epochs=1, group_by_length=True)
    dp = DPConfig(noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False)
    train(Toy(), data, cfg, seed=3, callbacks=[DPTraining(dp, cfg, 0, said.append)])
    # the draw is the seeded permutation, blind to the lengths, as the accountant assumes
    steps = data.asked[-6:]  # before them, the validator's probe of two samples
    assert np.array_equal(np.concatenate(steps), epoch_order(96, 3, 0, 16))
    assert any("not grouped by length" in line for line in said)
