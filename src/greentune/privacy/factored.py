"""Per-sample gradients of linear layers, kept as their factors instead of Opacus' tensors.

A linear layer's per-sample weight gradient is ``G_i^T A_i``: the sample's output gradients
(T x out) times its inputs (T x in), T = 1 for a flat input (the forecaster's head on its
flattened patch states, a classifier's head). DP-SGD needs two things of it: its norm, for
the clip factor ``c_i``, and the clipped sum ``sum_i c_i G_i^T A_i``, which is one matrix
product ``(c * G)^T A`` over all tokens of the batch. Opacus materialises the (batch, out, in)
tensor instead, twice per micro-batch (a zeroed buffer, then a copy), through full backward
hooks on every layer: for the forecaster's 0.9 M-parameter head that was most of DP-SGD's
overhead (2.42x the non-private time per step on the Victoria demo, against 1.10x factored:
``benchmarks/privacy.py --stages speed``).

The norm is taken the cheaper of two exact ways per layer (Bu et al., "mixed ghost clipping",
2022): from the materialised per-sample gradient when ``in * out`` is the smaller (LoRA's
rank-8 factors), else as the ghost norm ``sum_ts <g_t, g_s> <a_t, a_s>`` (Goodfellow 2015;
Li et al., ICLR 2022), which never forms it (the head: T = 1). Neither needs the second
backward pass of Opacus' own ghost clipping: the factors are kept from the one backward.

A layer called K times on the same samples before one backward has per-sample gradient
``sum_k G_ik^T A_ik``: the calls' tokens are joined, which is the same sum. Factors are kept in
float32 whatever the autocast dtype (bf16 output gradients on fp32 inputs), and the sums are
returned in each parameter's dtype, as Opacus does.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from greentune.errors import ModelError


@dataclass
class _Call:
    """One forward call: its input, and (after backward) the per-sample output gradient."""

    inputs: torch.Tensor
    grads: torch.Tensor | None = None


@dataclass
class FactoredLinear:
    """Hooks on one ``nn.Linear`` (batch first) that keep each call's input and output
    gradient, in Opacus' units (the mean loss's gradient times the batch size: each sample's
    own loss)."""

    module: nn.Linear
    calls: list[_Call] = field(default_factory=list)
    handles: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        # first: a hook that replaces the output (an adapter's) must not hide the layer's own
        self.handles.append(self.module.register_forward_hook(self._forward, prepend=True))

    @property
    def params(self) -> list[torch.Tensor]:
        m = self.module
        return [p for p in (m.weight, m.bias) if p is not None and p.requires_grad]

    def _forward(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], out: Any) -> None:
        if not torch.is_grad_enabled() or not out.requires_grad:
            return
        call = _Call(inputs[0].detach())
        self.calls.append(call)

        def keep(grad: torch.Tensor) -> None:
            g = grad.detach().float() * grad.shape[0]  # loss_reduction "mean", as Opacus
            call.grads = g if call.grads is None else call.grads + g  # a second backward adds

        out.register_hook(keep)

    def _tokens(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(A, G): every call's inputs (B, T, in) and output gradients (B, T, out), the calls'
        tokens joined; None before a backward."""
        done = [(c.inputs, c.grads) for c in self.calls if c.grads is not None]
        if not done:
            return None
        n = done[0][0].shape[0]
        if any(x.shape[0] != n for x, _ in done):
            sizes = sorted({x.shape[0] for x, _ in done})
            raise ModelError(
                f"{self.module} was called on batches of {sizes} samples before one backward: "
                "its per-sample gradients cannot be told apart; set privacy.dp.factored=false"
            )
        a = torch.cat([x.float().reshape(n, -1, x.shape[-1]) for x, _ in done], dim=1)
        g = torch.cat([y.reshape(n, -1, y.shape[-1]) for _, y in done], dim=1)
        return a, g

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self._tokens()
        if tokens is None:
            raise RuntimeError(
                f"no per-sample gradient of {self.module}: no backward since its last step"
            )
        return tokens

    def norms_sq(self) -> torch.Tensor:
        """(B,) squared norms of each sample's gradient over this layer's trainable tensors."""
        a, g = self._factors()
        w, b = self.module.weight, self.module.bias
        out = torch.zeros(g.shape[0], dtype=g.dtype, device=g.device)
        if w.requires_grad:
            tokens, n_in, n_out = a.shape[1], a.shape[2], g.shape[2]
            if tokens * (n_in + n_out) < n_in * n_out:  # ghost norm: B T^2 (in + out)
                ghost = torch.bmm(g, g.transpose(1, 2)) * torch.bmm(a, a.transpose(1, 2))
                out += ghost.sum((1, 2)).clamp(min=0)  # rounding must not give a negative
            else:  # materialised: B T in out, small when in * out is
                out += torch.bmm(g.transpose(1, 2), a).pow(2).sum((1, 2))
        if b is not None and b.requires_grad:
            out += g.sum(1).pow(2).sum(1)
        return out

    def clipped_sums(self, factor: torch.Tensor) -> dict[torch.Tensor, torch.Tensor]:
        """Each trainable tensor's sum over the batch of its per-sample gradients, each scaled
        by ``factor`` (B,)."""
        a, g = self._factors()
        scaled = g * factor.to(g.dtype)[:, None, None]
        out: dict[torch.Tensor, torch.Tensor] = {}
        w, b = self.module.weight, self.module.bias
        if w.requires_grad:
            out[w] = (scaled.reshape(-1, g.shape[2]).T @ a.reshape(-1, a.shape[2])).to(w.dtype)
        if b is not None and b.requires_grad:
            out[b] = scaled.sum((0, 1)).to(b.dtype)
        return out

    def per_sample(self) -> dict[torch.Tensor, torch.Tensor]:
        """The per-sample gradients materialised (B, *shape), none before a backward: for
        checks on small batches."""
        tokens = self._tokens()
        if tokens is None:
            return {}
        a, g = tokens
        out: dict[torch.Tensor, torch.Tensor] = {}
        w, b = self.module.weight, self.module.bias
        if w.requires_grad:
            out[w] = torch.bmm(g.transpose(1, 2), a)
        if b is not None and b.requires_grad:
            out[b] = g.sum(1)
        return out

    def zero(self) -> None:
        """Drop this part's contribution (a stand-in sample's) but keep its shape."""
        for c in self.calls:
            if c.grads is not None:
                c.grads = torch.zeros_like(c.grads)

    def clear(self) -> None:
        self.calls = []

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles, self.calls = [], []


def trainable_linears(model: nn.Module, grad_samplers: Container[type]) -> list[nn.Linear]:
    """The ``nn.Linear`` layers (exactly: peft's wrappers and quantised layers are other types)
    with a trainable tensor of their own that Opacus would hook one by one: not inside a module
    that holds a trainable tensor itself and has no grad sampler (Opacus computes such a
    module's per-sample gradients whole, children included), and not sharing a tensor with
    another module (tied weights: their per-sample gradient is a sum over both uses)."""
    uses: dict[int, int] = {}
    for m in model.modules():
        for p in m.parameters(recurse=False):
            uses[id(p)] = uses.get(id(p), 0) + 1
    out: list[nn.Linear] = []

    def walk(module: nn.Module) -> None:
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if type(module) is nn.Linear and own:
            if all(uses[id(p)] == 1 for p in module.parameters(recurse=False)):
                out.append(module)
            return
        if own and type(module) not in grad_samplers:
            return  # Opacus takes this module whole
        for child in module.children():
            walk(child)

    walk(model)
    return out
