"""Regularisers of the training objective (greentune.train.regularize): FGM and PGD against a
by-hand computation on a tiny model, label smoothing, R-Drop, and the refused combinations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import greentune as gt
from greentune.augment.callback import Augmentation
from greentune.config import ModelConfig, PeftConfig, RegularizeConfig, TrainConfig
from greentune.errors import ConfigError
from greentune.models.backbone import load_backbone
from greentune.models.classifier import TextClassifier, load_classifier
from greentune.models.encoders import PatchEncoder
from greentune.models.forecaster import Forecaster, ForecasterSpec
from greentune.tasks.base import mean_loss
from greentune.tasks.classify.remedies import classify_remedies
from greentune.tasks.forecast.remedies import forecast_remedies
from greentune.train import regularize
from greentune.train.callbacks import SetupContext, model_loss
from greentune.train.loop import train
from greentune.train.regularize import (
    Adversarial,
    LabelSmoothing,
    RDrop,
    adversarial_loss,
    input_embeddings,
    regularizers,
)
from greentune.train.state import LoopState
from greentune.tuning.methods import MethodContext, apply_method

N, S, D, CLASSES = 4, 5, 3, 3  # samples, tokens, embedding width, classes


class TinyText(nn.Module):
    """Token embeddings -> a non-linear layer -> logits; keeps the embeddings it computes."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(11, D)
        self.mix = nn.Linear(D, D)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(S * D, CLASSES)
        self.embeddings: list[torch.Tensor] = []  # what the body saw, hooks included
        self.batches: list[dict[str, torch.Tensor]] = []
        self.logits: list[torch.Tensor] = []

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(torch.tanh(self.mix(x))).flatten(1))

    def forward(self, batch):
        self.batches.append(batch)
        x = self.embed(batch["input_ids"])
        self.embeddings.append(x.detach().clone())
        out = self.body(x)
        self.logits.append(out)
        return out

    def loss(self, out, batch):
        return F.cross_entropy(out.float(), batch["labels"])


def text_batch(n: int = N, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(0, 11, (n, S), generator=g),
        "labels": torch.randint(0, CLASSES, (n,), generator=g),
    }


def context(model: nn.Module) -> SetupContext:
    return SetupContext(model, None, None, LoopState(), 1, False)


def grads(model: nn.Module) -> dict[str, torch.Tensor | None]:
    return {
        k: None if p.grad is None else p.grad.clone()
        for k, p in model.named_parameters()
        if p.requires_grad
    }


def num(t: torch.Tensor) -> float:
    return float(t.detach())


def norms(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).norm(dim=1)


def fgm_by_hand(model: TinyText, batch, eps: float) -> torch.Tensor:
    labels = batch["labels"]
    x = model.embed(batch["input_ids"])
    if not x.requires_grad:  # frozen embeddings
        x = x.detach().requires_grad_(True)
    clean = F.cross_entropy(model.body(x), labels)
    (g,) = torch.autograd.grad(clean, x, retain_graph=True)
    radius = eps * norms(x.detach())  # relative to each sample's own embeddings
    delta = radius.view(-1, 1, 1) * g / g.flatten(1).norm(dim=1).view(-1, 1, 1)
    adversarial = F.cross_entropy(model.body(x + delta), labels)
    return (clean + adversarial) / 2


@pytest.mark.parametrize("frozen", [False, True])
def test_fgm_is_the_mean_of_clean_and_loss_at_eps_along_each_samples_gradient(frozen):
    eps, batch = 0.3, text_batch()
    model = TinyText()
    model.embed.weight.requires_grad_(not frozen)
    expected = fgm_by_hand(model, batch, eps)
    expected.backward()
    want = grads(model)
    model.zero_grad(set_to_none=True)
    model.embeddings.clear()
    loss = adversarial_loss(model_loss, model.embed, eps, 1, eps)(model, batch)
    assert all(g is None for g in grads(model).values())  # the probe left no .grad behind
    loss.backward()
    assert num(loss) == pytest.approx(num(expected), rel=1e-6)
    clean = num(F.cross_entropy(model.body(model.embed(batch["input_ids"])), batch["labels"]))
    assert num(loss) > clean  # the perturbation goes uphill
    got = grads(model)
    assert got.keys() == want.keys() and ("embed.weight" in got) != frozen
    for name, g in got.items():
        torch.testing.assert_close(g, want[name], rtol=1e-5, atol=1e-7, msg=name)
    assert model.embed.weight.grad is None if frozen else model.embed.weight.grad.abs().sum() > 0
    clean_x, adv_x = model.embeddings  # two forward passes, each sample moved by eps x its norm
    torch.testing.assert_close(norms(adv_x - clean_x), eps * norms(clean_x))


def pgd_by_hand(model: TinyText, batch, eps: float, steps: int, size: float) -> torch.Tensor:
    labels = batch["labels"]

    x = model.embed(batch["input_ids"])
    scale = norms(x.detach())  # radius and step relative to each sample's embeddings

    def project(d: torch.Tensor) -> torch.Tensor:
        return d * (eps * scale / norms(d)).clamp(max=1.0).view(-1, 1, 1)

    def unit(g: torch.Tensor) -> torch.Tensor:
        return g * (scale / norms(g)).view(-1, 1, 1)

    clean = F.cross_entropy(model.body(x), labels)
    (g,) = torch.autograd.grad(clean, x, retain_graph=True)
    delta = project(size * unit(g))
    for _ in range(steps - 1):
        d = delta.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model.body(x.detach() + d), labels), d)
        delta = project(d + size * unit(g))
    return (clean + F.cross_entropy(model.body(x + delta.detach()), labels)) / 2


@pytest.mark.parametrize("step_size, first", [(None, 2.5 * 0.5 / 3), (0.2, 0.2)])
def test_pgd_takes_steps_plus_one_passes_and_stays_in_the_epsilon_ball(step_size, first):
    eps, steps, batch = 0.5, 3, text_batch()
    model = TinyText()
    expected = num(pgd_by_hand(model, batch, eps, steps, step_size or 2.5 * eps / steps))
    model.embeddings.clear()
    ctx = context(model)
    cfg = RegularizeConfig(adversarial="pgd", epsilon=eps, steps=steps, step_size=step_size)
    Adversarial(cfg).on_setup(ctx)
    loss = ctx.loss_fn(model, batch)
    assert num(loss) == pytest.approx(expected, rel=1e-6)
    assert len(model.embeddings) == steps + 1  # clean, steps - 1 probes, the adversarial pass
    clean_x, *moved = model.embeddings
    size = norms(clean_x)  # lengths are relative to each sample's clean embeddings
    deltas = [norms(x - clean_x) / size for x in moved]
    torch.testing.assert_close(deltas[0], torch.full((N,), first))  # the first step's length
    for d in deltas:
        assert (d <= eps * (1 + 1e-5)).all()
    if step_size is None:  # 2.5 eps / 3 per step: the second step already reaches the border
        torch.testing.assert_close(deltas[-1], torch.full((N,), eps))


def test_fgm_through_the_callback_makes_two_passes_with_epsilon_steps():
    model = TinyText()
    ctx = context(model)
    cfg = RegularizeConfig(adversarial="fgm", epsilon=0.2, steps=5, step_size=0.05)
    Adversarial(cfg).on_setup(ctx)
    loss = ctx.loss_fn(model, text_batch())
    assert num(loss) == pytest.approx(num(fgm_by_hand(TinyText(), text_batch(), 0.2)))
    clean_x, adv_x = model.embeddings  # fgm: one step of length epsilon, whatever steps say
    torch.testing.assert_close(norms(adv_x - clean_x), 0.2 * norms(clean_x))


def test_adversarial_training_refuses_several_processes(monkeypatch):
    monkeypatch.setattr(regularize.ranks, "world_size", lambda: 2)
    with pytest.raises(ConfigError, match="--nproc"):
        Adversarial(RegularizeConfig(adversarial="fgm")).on_setup(context(TinyText()))


def test_input_embeddings_of_the_forecaster_and_the_text_classifier():
    spec = ForecasterSpec(
        "patch",
        n_channels=2,
        n_known=1,
        n_targets=1,
        context_length=24,
        horizon=12,
        patch_len=12,
        quantiles=(0.1, 0.5, 0.9),
        linear_skip=True,
        pooling="mean",
    )
    bb = load_backbone(ModelConfig(backbone="tiny-bert"), keep_word_embeddings=False)
    bb = apply_method(bb, PeftConfig(method="lora"), MethodContext(total_steps=10))
    forecaster = Forecaster(spec, bb, bb.config.hidden_size)
    assert input_embeddings(forecaster) is forecaster.encoder
    assert isinstance(forecaster.encoder, PatchEncoder)
    inner = load_classifier(ModelConfig(backbone="tiny-bert"), ["a", "b"], 0)
    classifier = TextClassifier(inner)
    words = input_embeddings(classifier)
    assert words is inner.get_input_embeddings() is inner.bert.embeddings.word_embeddings
    assert isinstance(words, nn.Embedding) and words.num_embeddings == inner.config.vocab_size
    assert input_embeddings(TinyText()) is not None
    with pytest.raises(ConfigError, match="Linear has no input embeddings"):
        input_embeddings(nn.Linear(2, 2))


def test_fgm_on_the_tiny_bert_classifier_moves_the_word_embeddings():
    torch.manual_seed(0)
    model = TextClassifier(load_classifier(ModelConfig(backbone="tiny-bert"), ["a", "b"], 0))
    torch.nn.init.normal_(model.model.classifier.weight, std=0.5)
    batch = {
        "input_ids": torch.tensor([[2, 7, 9, 3], [2, 11, 3, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
        "labels": torch.tensor([0, 1]),
    }
    # the LayerNorm after word + position + type embeddings: a pass's shift shows up there
    summed: list[torch.Tensor] = []
    norm = model.model.bert.embeddings.LayerNorm
    handle = norm.register_forward_pre_hook(lambda _m, args: summed.append(args[0].detach()))
    try:
        loss = adversarial_loss(model_loss, input_embeddings(model), 0.5, 1, 0.5)(
            model.eval(), batch
        )
    finally:
        handle.remove()
    loss.backward()
    assert model.model.bert.embeddings.word_embeddings.weight.grad is not None
    clean, adversarial = summed  # two passes; the second moved by 0.5 x each sample's norm
    words = model.model.bert.embeddings.word_embeddings(batch["input_ids"]).detach()
    torch.testing.assert_close(norms(adversarial - clean), 0.5 * norms(words))
    assert num(loss) > num(model_loss(model, batch))


# ------------------------------------------------------------------- label smoothing, R-Drop


def test_label_smoothing_trains_on_smoothed_targets_and_validates_on_the_plain_loss():
    s, batch = 0.1, text_batch()
    model = TinyText()
    ctx = context(model)
    LabelSmoothing(s).on_setup(ctx)
    loss = ctx.loss_fn(model, batch)
    logits = model(batch)
    assert num(loss) == num(F.cross_entropy(logits, batch["labels"], label_smoothing=s))
    target = (1 - s) * F.one_hot(batch["labels"], CLASSES) + s / CLASSES  # by hand
    by_hand = -(target * logits.log_softmax(-1)).sum(-1).mean()
    assert num(loss) == pytest.approx(num(by_hand), rel=1e-6)
    plain = num(F.cross_entropy(logits, batch["labels"]))
    assert num(model.loss(logits, batch)) == plain != pytest.approx(num(loss), rel=1e-3)


class TextData:
    def __init__(self, n: int = 12) -> None:
        self.all = text_batch(n, seed=1)

    def __len__(self) -> int:
        return n_rows(self.all)

    def get(self, idx):
        i = torch.as_tensor(np.asarray(idx))
        return {k: v[i] for k, v in self.all.items()}


def n_rows(batch) -> int:
    return len(batch["labels"])


def test_the_loop_steps_on_the_smoothed_loss_and_validates_on_the_models_own():
    data, s = TextData(), 0.2
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.01, patience=None, clip_norm=None)
    model = TinyText()
    everything = data.get(np.arange(12))
    start = num(
        F.cross_entropy(model.body(model.embed(everything["input_ids"])), everything["labels"])
    )
    first = data.get(np.random.default_rng([7, 0]).permutation(12)[:4])  # the loop's order
    logits = model.body(model.embed(first["input_ids"]))
    smoothed = num(F.cross_entropy(logits, first["labels"], label_smoothing=s))
    result = train(
        model,
        data,
        cfg,
        seed=7,
        validate=lambda: mean_loss(model, data, 12),
        callbacks=[LabelSmoothing(s)],
    )
    assert result.state.history[0]["loss"] == pytest.approx(smoothed, rel=1e-6)
    assert result.state.val_history[0]["val_loss"] == pytest.approx(start, rel=1e-6)


def test_rdrop_without_dropout_is_the_plain_loss_from_one_doubled_forward():
    model, batch = TinyText(0.0), text_batch()
    ctx = context(model)
    RDrop(0.7).on_setup(ctx)
    loss = ctx.loss_fn(model, batch)
    (seen,) = model.batches  # called once per step
    assert n_rows(seen) == 2 * N
    for key in batch:
        assert torch.equal(seen[key][:N], batch[key]) and torch.equal(seen[key][N:], batch[key])
    plain = num(F.cross_entropy(model.body(model.embed(batch["input_ids"])), batch["labels"]))
    assert num(loss) == pytest.approx(plain, rel=1e-6)  # the KL of two equal passes is 0


def test_rdrop_with_dropout_adds_the_symmetric_kl_of_the_two_passes():
    weight, batch = 0.7, text_batch()
    model = TinyText(0.5).train()
    ctx = context(model)
    RDrop(weight).on_setup(ctx)
    torch.manual_seed(1)
    loss = ctx.loss_fn(model, batch)
    (logits,) = model.logits
    first, second = logits.detach().chunk(2)
    assert not torch.equal(first, second)  # two dropout masks
    halves = (
        F.cross_entropy(first, batch["labels"]) + F.cross_entropy(second, batch["labels"])
    ) / 2
    p, q = first.softmax(-1), second.softmax(-1)
    kl_pq = (p * (p.log() - q.log())).sum(-1).mean()
    kl_qp = (q * (q.log() - p.log())).sum(-1).mean()
    assert num(loss) > num(halves)
    assert num(loss) == pytest.approx(num(halves + weight * (kl_pq + kl_qp) / 2), rel=1e-5)
    loss.backward()
    assert model.mix.weight.grad is not None


def test_the_regularizers_stack_label_smoothing_inside_rdrop_inside_fgm():
    cfg = RegularizeConfig(adversarial="fgm", epsilon=0.1, label_smoothing=0.1, rdrop=0.5)
    callbacks = regularizers(cfg, classifier=True, dropout=0.1)
    assert [type(c) for c in callbacks] == [LabelSmoothing, RDrop, Adversarial]
    model = TinyText(0.0)
    ctx = context(model)
    for cb in callbacks:
        cb.on_setup(ctx)
    loss = ctx.loss_fn(model, text_batch())
    assert len(model.batches) == 2  # clean and adversarial, each one doubled batch
    assert [n_rows(b) for b in model.batches] == [2 * N, 2 * N]
    assert torch.isfinite(loss)


# ------------------------------------------------------------------- what a task refuses


def remedies(task: str, *overrides: str):
    cfg = gt.build_config(overrides=[f"task={task}", *overrides])
    return (classify_remedies if task == "classify" else forecast_remedies)(cfg)


DP = "privacy.dp.target_epsilon=8"


@pytest.mark.parametrize(
    "task, overrides, key, also",
    [
        ("forecast", ["augment.deletion=0.1"], "augment.deletion", "task=forecast"),
        ("forecast", ["augment.insertion=0.1"], "augment.insertion", "augment.jitter"),
        (
            "forecast",
            ["model.encoder=text", "augment.jitter=0.1"],
            "augment.jitter",
            "model.encoder=patch",
        ),
        (
            "forecast",
            ["regularize.label_smoothing=0.1"],
            "regularize.label_smoothing",
            "task=classify",
        ),
        ("forecast", ["regularize.rdrop=0.1", "model.dropout=0.1"], "regularize.rdrop", "classif"),
        ("forecast", [DP, "augment.scaling=0.1"], "augment.scaling", "privacy.dp"),
        ("forecast", [DP, "regularize.adversarial=fgm"], "regularize.adversarial", "privacy.dp"),
        ("classify", ["augment.jitter=0.1"], "augment.jitter", "task=classify"),
        ("classify", ["augment.window_slice=0.5"], "augment.window_slice", "augment.deletion"),
        ("classify", ["augment.mixup=0.2"], "augment.mixup", "task=classify"),
        ("classify", ["regularize.rdrop=0.5"], "regularize.rdrop", "model.dropout"),
        ("classify", [DP, "augment.deletion=0.1"], "augment.deletion", "privacy.dp"),
        (
            "classify",
            [DP, "regularize.label_smoothing=0.1"],
            "regularize.label_smoothing",
            "privacy.dp",
        ),
    ],
)
def test_refused_combinations_name_the_key(task, overrides, key, also):
    with pytest.raises(ConfigError) as err:
        remedies(task, *overrides)
    message = str(err.value)
    assert message.startswith(key + " ") and also in message, message


def test_what_each_task_builds():
    assert remedies("forecast") == [] and remedies("classify") == []
    forecast = remedies(
        "forecast", "augment.jitter=0.1", "augment.window_slice=0.9", "regularize.adversarial=pgd"
    )
    assert [type(c) for c in forecast] == [Augmentation, Adversarial]
    assert [str(c) for c in forecast] == [
        "augmentation: jitter 0.1, window_slice 0.9, p 0.5",
        "adversarial training: pgd, epsilon 0.01, 3 steps",
    ]
    classify = remedies(
        "classify",
        "augment.swap=0.2",
        "regularize.label_smoothing=0.1",
        "regularize.rdrop=0.5",
        "model.dropout=0.1",
    )
    assert [str(c) for c in classify] == [
        "augmentation: swap 0.2, p 0.5",
        "label smoothing 0.1",
        "R-Drop, KL weight 0.5",
    ]
