"""DP-SGD's per-sample gradients: computed (Opacus' GradSampleModule, and the factored linear
layers of privacy/factored.py), checked by a probe step before training, clipped and summed
one micro-batch at a time, noised once per step (Opacus' DPOptimizer). The callback that
wires them into the loop, with the budget and the batches, is privacy/dp.py."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from greentune.config import DPConfig
from greentune.errors import ConfigError
from greentune.privacy.accounting import Budget
from greentune.privacy.factored import FactoredLinear, trainable_linears

Log = Callable[[str], None]

SHARED_TABLES = ("position_embeddings", "wpe")
"""Position tables: Hugging Face looks them up with one row of position ids for the whole
batch, so Opacus sees one gradient where it needs one per sample."""


def dp_optimizer(
    optimizer: Any,
    budget: Budget,
    cfg: DPConfig,
    logical_batch: float,
    seed: int,
    factored: Sequence[FactoredLinear] = (),
) -> Any:
    from opacus.optimizers import DPOptimizer
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    factored_ids = {id(p) for f in factored for p in f.params}

    class PartwiseDPOptimizer(DPOptimizer):  # type: ignore[misc]
        """Clips and sums each micro-batch's per-sample gradients as soon as the next one
        starts, so a virtual batch holds one part's per-sample gradients at a time (Opacus'
        list of parts held them all: 68 against 116-122 samples/s on the Victoria demo with
        virtual batches of 32 x 8, benchmarks/privacy.py); takes the ``factored`` layers'
        per-sample gradients from their factors (privacy/factored.py); drops stand-in
        samples; in secure mode reseeds the noise from the operating system's CSPRNG at every
        step."""

        fresh = True
        drop_pending = False

        def _plain(self) -> list[Any]:
            return [p for p in self.params if id(p) not in factored_ids]

        def next_part(self, stand_in: bool) -> None:
            if not self.fresh:
                self._fold(self.drop_pending)
            self.fresh, self.drop_pending = False, stand_in

        def _fold(self, drop: bool) -> None:
            if not drop:
                self.clip_and_accumulate()
            for p in self.params:
                p.grad_sample = None
            for f in factored:
                f.clear()

        @property
        def accumulated_iterations(self) -> int:
            counts = {
                len(p.grad_sample) if isinstance(p.grad_sample, list) else 1 for p in self._plain()
            }
            if len(counts) > 1:
                raise ValueError("Number of accumulated steps is inconsistent across parameters")
            return counts.pop() if counts else 1

        def clip_and_accumulate(self) -> None:
            """Opacus' clipping with the factored layers' norms and sums beside the
            per-sample tensors: one clip factor per sample over every trainable tensor."""
            plain = self._plain()
            samples = [self._get_flat_grad_sample(p) for p in plain]
            norms_sq = [g.reshape(len(g), -1).pow(2).sum(1) for g in samples]
            norms_sq += [f.norms_sq() for f in factored]
            norms = torch.stack(norms_sq, dim=1).sum(1).sqrt()
            factor = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
            sums: dict[int, torch.Tensor] = {}
            for p, g in zip(plain, samples, strict=True):
                _check_processed_flag(p.grad_sample)
                sums[id(p)] = torch.einsum("i,i...", factor.to(p.dtype), g.to(p.dtype))
                _mark_as_processed(p.grad_sample)
            for f in factored:
                sums.update({id(p): s for p, s in f.clipped_sums(factor).items()})
            for p in self.params:
                grad = sums[id(p)]
                p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad

        def pre_step(self, closure: Any = None) -> Any:
            if self.drop_pending:
                for p in self._plain():
                    if isinstance(p.grad_sample, torch.Tensor):
                        p.grad_sample.zero_()
                for f in factored:
                    f.zero()
            if cfg.secure_mode:
                self.generator.manual_seed(int.from_bytes(os.urandom(8), "little"))
            # Opacus' pre_step without its "no per-sample gradient at all" shortcut, which
            # would skip the noise when every trainable tensor is factored
            self.clip_and_accumulate()
            if self._check_skip_next_step():
                self._is_last_step_skipped = True
                return False
            self.add_noise()
            self.scale_grad()
            if self.step_hook:
                self.step_hook(self)
            self._is_last_step_skipped = False
            return True

        def zero_grad(self, set_to_none: bool = False) -> None:
            super().zero_grad(set_to_none)
            for f in factored:
                f.clear()
            self.fresh, self.drop_pending = True, False

    generator = torch.Generator().manual_seed(seed)
    return PartwiseDPOptimizer(
        optimizer,
        noise_multiplier=budget.noise_multiplier,
        max_grad_norm=cfg.max_grad_norm,
        expected_batch_size=logical_batch,  # one part is summed at a time: divide by it all
        loss_reduction="mean",
        generator=generator,
        secure_mode=cfg.secure_mode,
    )


@dataclass
class Wrapped:
    """The model as DP-SGD trains it: Opacus' GradSampleModule around it, the tensors frozen
    for want of a per-sample gradient, and the layers whose per-sample gradients are kept as
    factors instead of Opacus' tensors."""

    module: nn.Module
    frozen: list[str] = field(default_factory=list)
    factored: list[FactoredLinear] = field(default_factory=list)

    def close(self) -> None:
        """Remove every hook; the trained module stays as it is."""
        self.module._close()  # type: ignore[operator]
        for f in self.factored:
            f.remove()


def wrap_model(model: nn.Module, batches: Any, log: Log, factor: bool = True) -> Wrapped:
    """Opacus' GradSampleModule around ``model``, after a probe step has shown that every
    trainable tensor gets one correct per-sample gradient. ``factor``: linear layers keep
    their per-sample gradients as factors (privacy/factored.py: exact, cheaper, no
    (batch, out, in) tensor for the head); False: Opacus computes them all."""

    # Opacus' full backward hooks on a first layer whose inputs need no gradient: harmless
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    mode = model.training
    try:
        # Opacus validates and records activations in training mode only (from_pretrained
        # returns eval mode); the loop sets the mode it trains in anyway
        model.train()
        return _wrap(model, batches, log, factor)
    finally:
        model.train(mode)


def _wrap(model: nn.Module, batches: Any, log: Log, factor: bool) -> Wrapped:
    from opacus import GradSampleModule
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ConfigError(
            "Opacus cannot train this model privately: "
            + "; ".join(str(e) for e in errors)
            + ". Choose another backbone or peft.method (lora works with both encoders)"
        )
    linears = trainable_linears(model, GradSampleModule.GRAD_SAMPLERS) if factor else []
    # Opacus hooks the modules that hold a trainable tensor when it wraps: these are left out
    held = [(p, p.requires_grad) for m in linears for p in m.parameters(recurse=False)]
    for p, _ in held:
        p.requires_grad_(False)
    try:
        gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    finally:
        for p, trainable in held:
            p.requires_grad_(trainable)
    wrapped = Wrapped(gsm, [], [FactoredLinear(m) for m in linears])
    try:
        bad = _probe(wrapped, model, batches)
        frozen = [n for n in bad if any(t in n for t in SHARED_TABLES)]
        if frozen:
            params = dict(model.named_parameters())
            for name in frozen:
                params[name].requires_grad_(False)
            log(
                f"privacy: {', '.join(frozen)} frozen: the position table is looked up once "
                "for the whole batch, so it has no per-sample gradient"
            )
            bad = _probe(wrapped, model, batches)
    except BaseException:  # no hook may stay on a model that is trained again (a client's)
        wrapped.close()
        raise
    if bad:
        wrapped.close()
        raise ConfigError(
            f"Opacus computes no correct per-sample gradient for {len(bad)} trainable tensors "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); training them under DP "
            "would leave them out or mix samples (opacus #820). Use peft.method=lora or ln"
        )
    wrapped.frozen = frozen
    return wrapped


def per_sample_gradients(wrapped: Wrapped, model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable tensor's per-sample gradient of the last backward, by name (the factored
    layers' materialised): for checks on small batches."""
    factored = {id(p): g for f in wrapped.factored for p, g in f.per_sample().items()}
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            gs = factored.get(id(p), getattr(p, "grad_sample", None))
            if isinstance(gs, torch.Tensor):
                out[name] = gs
    return out


def _probe(wrapped: Wrapped, model: nn.Module, batches: Any) -> list[str]:
    """Trainable tensors without a correct per-sample gradient after one forward and backward
    of two samples: none, one of the wrong size, or ones whose mean is not the batch's own
    gradient (Opacus' functorch on a tied weight; two samples' gradients swapped would pass);
    nothing of it is kept (gradients cleared, RNG restored)."""
    n = min(2, len(batches))
    batch = batches.get(np.arange(n))
    wrapped.module.zero_grad(set_to_none=True)  # type: ignore[call-arg]
    with torch.random.fork_rng():
        loss = model.loss(wrapped.module(batch), batch)  # type: ignore[operator]
        loss.backward()
    got = per_sample_gradients(wrapped, model)
    bad = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        gs = got.get(name)
        if gs is None or gs.shape[0] != n or gs.shape[1:] != p.shape:
            bad.append(name)
            continue
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        mean = gs.mean(0).to(grad.dtype)  # per-sample losses' gradients: their mean is the batch's
        if not torch.allclose(mean, grad, rtol=1e-3, atol=1e-6 * max(1.0, float(grad.abs().max()))):
            bad.append(name)
    wrapped.module.zero_grad(set_to_none=True)  # type: ignore[call-arg]
    for f in wrapped.factored:
        f.clear()
    return bad
