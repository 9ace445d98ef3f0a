"""Regularisers of the training objective, as callbacks that wrap the loop's ``StepLoss``:
adversarial training on the input embeddings (FGM, PGD), label smoothing and R-Drop.

Adversarial training (Miyato et al. 2017 for FGM on embeddings; Madry et al. 2018 for PGD)
perturbs the output of the model's input-embedding module: the token embeddings of a text
model, the patch embeddings of the forecaster. Each sample's perturbation lies in an L2 ball,
over all its positions, of radius ``epsilon`` x the norm of its clean embeddings (a
channel-independent forecaster folds each target into a row of its own: the ball is then per
sample and target); its direction comes from the gradient of the loss with respect to those
embeddings only (``torch.autograd.grad``), so no parameter gradient is touched until the step's
own backward. The step trains on (clean + adversarial) / 2, the weighting of Goodfellow et al.
2015, so the logged loss stays on the scale of a clean one.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import nn

from greentune.config import SERIES_AUGMENTS, TEXT_AUGMENTS, RegularizeConfig, RunConfig
from greentune.distributed import ranks
from greentune.errors import ConfigError
from greentune.train.callbacks import Callback, SetupContext, StepLoss
from greentune.train.checkpoint import unwrap

Batch = dict[str, torch.Tensor]


def input_embeddings(model: nn.Module) -> nn.Module:
    """The module whose output adversarial training perturbs: the forecaster's patch encoder,
    else the backbone's (or the classifier's) token embeddings."""
    inner = unwrap(model)
    encoder = getattr(inner, "encoder", None)
    if isinstance(encoder, nn.Module) and hasattr(inner, "head"):  # the patch forecaster
        return encoder
    for owner in (getattr(inner, "backbone", None), getattr(inner, "model", None), inner):
        get = getattr(owner, "get_input_embeddings", None)
        if get is not None and isinstance(get(), nn.Module):
            return get()  # type: ignore[no-any-return]
    raise ConfigError(
        f"regularize.adversarial: {type(inner).__name__} has no input embeddings to perturb"
    )


@contextmanager
def _hooked(module: nn.Module, hook: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    handle = module.register_forward_hook(lambda _m, _args, out: hook(out))
    try:
        yield
    finally:
        handle.remove()


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) values shaped to broadcast over ``like``'s sample rows."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _norms(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).clamp(min=1e-12)


def _step(g: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Each sample's gradient scaled to its own ``length`` (B,)."""
    return g * _per_sample(length / _norms(g), g)


def _project(delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Each sample's perturbation pulled back into its L2 ball of ``radius`` (B,)."""
    return delta * _per_sample((radius / _norms(delta)).clamp(max=1.0), delta)


def _shifted(out: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The embeddings moved by ``delta``; only ``delta`` carries a gradient in a probe."""
    return out.detach() + delta if delta.requires_grad else out + delta


def adversarial_loss(
    inner: StepLoss,
    embeddings: nn.Module,
    epsilon: float,
    steps: int,
    step_size: float,
) -> StepLoss:
    """``inner`` made adversarial: PGD with ``steps`` steps (one step of size ``epsilon`` is
    FGM), starting from the clean pass's gradient. ``epsilon`` and ``step_size`` are relative:
    a sample's radius is epsilon x the L2 norm of its clean embeddings, so one setting means
    the same for token embeddings (norm about 1 per token in MiniLM) and for a forecaster's
    patch embeddings (whose scale its encoder learns)."""

    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        seen: dict[str, torch.Tensor] = {}

        def capture(out: torch.Tensor) -> torch.Tensor:
            if not out.requires_grad:  # frozen embeddings: make them a leaf we can ask about
                out = out.detach().requires_grad_(True)
            seen["x"] = out
            return out

        with _hooked(embeddings, capture):
            clean = inner(model, batch)
        (grad,) = torch.autograd.grad(clean, seen["x"], retain_graph=True)
        size = _norms(seen["x"].detach())
        radius, stride = epsilon * size, step_size * size
        delta = _project(_step(grad, stride), radius)
        for _ in range(steps - 1):
            delta = delta.detach().requires_grad_(True)
            with _hooked(embeddings, partial(_shifted, delta=delta)):
                probe = inner(model, batch)
            (grad,) = torch.autograd.grad(probe, delta)
            delta = _project(delta + _step(grad, stride), radius)
        fixed = delta.detach()
        with _hooked(embeddings, partial(_shifted, delta=fixed)):
            adversarial = inner(model, batch)
        return (clean + adversarial) / 2

    return loss


class Adversarial(Callback):
    """``regularize.adversarial``: FGM or PGD on the input embeddings."""

    def __init__(self, cfg: RegularizeConfig) -> None:
        self.cfg = cfg

    def __str__(self) -> str:
        steps = "" if self.cfg.adversarial == "fgm" else f", {self.cfg.steps} steps"
        return f"adversarial training: {self.cfg.adversarial}, epsilon {self.cfg.epsilon:g}{steps}"

    def on_setup(self, ctx: SetupContext) -> None:
        if ranks.world_size() > 1:
            raise ConfigError(
                "regularize.adversarial runs several forward passes per step, which DDP's "
                "gradient reduction does not allow: train it in one process (no --nproc)"
            )
        cfg = self.cfg
        steps = 1 if cfg.adversarial == "fgm" else cfg.steps
        size = (
            cfg.epsilon if cfg.adversarial == "fgm" else cfg.step_size or 2.5 * cfg.epsilon / steps
        )
        ctx.loss_fn = adversarial_loss(
            ctx.loss_fn, input_embeddings(ctx.model), cfg.epsilon, steps, size
        )


def _labels(batch: Batch) -> torch.Tensor:
    return batch["labels"]


class LabelSmoothing(Callback):
    """``regularize.label_smoothing``: cross-entropy against smoothed targets (training only:
    validation keeps the plain loss, so early stopping compares like with like)."""

    def __init__(self, smoothing: float) -> None:
        self.smoothing = smoothing

    def __str__(self) -> str:
        return f"label smoothing {self.smoothing:g}"

    def on_setup(self, ctx: SetupContext) -> None:
        smoothing = self.smoothing

        def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
            logits = model(batch).float()
            return nn.functional.cross_entropy(logits, _labels(batch), label_smoothing=smoothing)

        ctx.loss_fn = loss


class RDrop(Callback):
    """``regularize.rdrop``: each batch twice through the network (in one forward, stacked,
    as Liang et al.'s code does, so DDP sees one pass), its own loss on each and ``weight`` x
    the symmetric KL between the two dropout masks' predictions."""

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def __str__(self) -> str:
        return f"R-Drop, KL weight {self.weight:g}"

    def on_setup(self, ctx: SetupContext) -> None:
        inner, weight = ctx.loss_fn, self.weight

        def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
            doubled = {k: torch.cat([v, v]) for k, v in batch.items()}
            seen: dict[str, torch.Tensor] = {}
            task_loss = inner(_Capturing(model, seen), doubled)
            first, second = seen["out"].float().chunk(2)
            logp, logq = first.log_softmax(-1), second.log_softmax(-1)
            kl = nn.functional.kl_div(logp, logq, log_target=True, reduction="batchmean")
            kl_back = nn.functional.kl_div(logq, logp, log_target=True, reduction="batchmean")
            return task_loss + weight * (kl + kl_back) / 2

        ctx.loss_fn = loss


class _Capturing(nn.Module):
    """Calls ``model`` and keeps its output for R-Drop's KL term (``loss`` passes through)."""

    def __init__(self, model: nn.Module, seen: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.seen = seen
        self.wrapped = [model]  # a list: not registered as a submodule

    def forward(self, batch: Batch) -> torch.Tensor:
        out: torch.Tensor = self.wrapped[0](batch)
        self.seen["out"] = out
        return out

    def loss(self, out: torch.Tensor, batch: Batch) -> torch.Tensor:
        return unwrap(self.wrapped[0]).loss(out, batch)  # type: ignore[no-any-return]


def regularizers(cfg: RegularizeConfig, classifier: bool, dropout: float) -> list[Callback]:
    """The callbacks ``regularize`` asks for; classifier-only options refused elsewhere."""
    if not classifier:
        for key in ("label_smoothing", "rdrop"):
            if getattr(cfg, key) > 0:
                raise ConfigError(
                    f"regularize.{key} is for classifiers (task=classify); a forecaster's "
                    "quantile loss has no classes: use regularize.adversarial or augment"
                )
    if cfg.rdrop > 0 and dropout <= 0:
        raise ConfigError(
            "regularize.rdrop compares two dropout passes and model.dropout is 0: set "
            "model.dropout (e.g. 0.1)"
        )
    out: list[Callback] = []
    if cfg.label_smoothing > 0:
        out.append(LabelSmoothing(cfg.label_smoothing))
    if cfg.rdrop > 0:
        out.append(RDrop(cfg.rdrop))
    if cfg.adversarial != "none":
        out.append(Adversarial(cfg))
    return out


def task_augments(
    cfg: RunConfig, task: str, own: tuple[str, ...], other: tuple[str, ...], kinds: tuple[str, str]
) -> list[str]:
    """The switched-on augmentations among ``own`` (the task's kind: ``kinds[1]``), after
    refusing those of ``other`` (``kinds[0]``) and what ``check_remedies`` refuses."""
    check_remedies(cfg)
    wrong = cfg.augment.active(other)
    if wrong:
        raise ConfigError(
            f"augment.{wrong[0]} changes {kinds[0]}; task={task} augments {kinds[1]}: use "
            f"augment.{', augment.'.join(own)}"
        )
    return cfg.augment.active(own)


def check_remedies(cfg: RunConfig) -> None:
    """Refuse what cannot be combined with ``augment`` or ``regularize`` (before any data)."""
    on = [f"augment.{k}" for k in cfg.augment.active((*SERIES_AUGMENTS, *TEXT_AUGMENTS))]
    for key in ("label_smoothing", "rdrop"):
        if getattr(cfg.regularize, key) > 0:
            on.append(f"regularize.{key}")
    if cfg.regularize.adversarial != "none":
        on.append("regularize.adversarial")
    if on and cfg.privacy.dp.enabled:
        raise ConfigError(
            f"{on[0]} cannot be combined with privacy.dp yet: DP-SGD's per-sample gradients and "
            "its accounting assume one plain forward pass per sample (mixup even mixes two "
            "samples); leave them off under DP"
        )
