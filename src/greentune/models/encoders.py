"""Numeric encoders: how a forecast window reaches a language-model backbone.

- ``patch`` (One-Fits-All / GPT4TS): the context of all channels is cut into patches of
  ``patch_len`` steps, each linearly embedded to the hidden size; known-future covariates over the
  horizon get patches of their own. The tokens go in as ``inputs_embeds``.
- ``text`` (PromptCast-like, the founding BERT-regression recipe): each window is written as a
  short English prompt, tokenised, and regressed from the pooled token states.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn


class PatchEncoder(nn.Module):
    """(past (B, L, C), future (B, H, K)) -> token embeddings (B, n_tokens, hidden).

    Context patches start every ``stride`` steps (stride < patch_len overlaps them, as
    PatchTST does); the context is left-padded so the newest step ends the last patch.
    """

    def __init__(
        self,
        n_channels: int,
        n_known: int,
        context_length: int,
        horizon: int,
        patch_len: int,
        hidden: int,
        stride: int | None = None,
    ) -> None:
        super().__init__()
        self.patch_len = patch_len
        self.stride = stride or patch_len
        self.n_past = max(0, math.ceil((context_length - patch_len) / self.stride)) + 1
        self.n_future = math.ceil(horizon / patch_len) if n_known else 0
        self.past_proj = nn.Linear(patch_len * n_channels, hidden)
        self.future_proj = nn.Linear(patch_len * n_known, hidden) if n_known else None

    @property
    def n_tokens(self) -> int:
        return self.n_past + self.n_future

    def _past_patches(self, x: torch.Tensor) -> torch.Tensor:
        b, steps, c = x.shape
        pad = (self.n_past - 1) * self.stride + self.patch_len - steps
        if pad:  # the oldest steps are missing
            x = nn.functional.pad(x, (0, 0, pad, 0))
        if self.stride == self.patch_len:  # a plain reshape: what ONNX exports most simply
            return x.reshape(b, self.n_past, self.patch_len * c)
        # (B, n, C, P) -> (B, n, P, C): each patch flattened step-major, as the reshape above
        patches = x.unfold(1, self.patch_len, self.stride).permute(0, 1, 3, 2)
        return patches.reshape(b, self.n_past, self.patch_len * c)

    def _future_patches(self, x: torch.Tensor) -> torch.Tensor:
        b, steps, c = x.shape
        pad = self.n_future * self.patch_len - steps
        if pad:  # right-pad the horizon
            x = nn.functional.pad(x, (0, 0, 0, pad))
        return x.reshape(b, self.n_future, self.patch_len * c)

    def forward(self, past: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        tokens = self.past_proj(self._past_patches(past))
        if self.future_proj is not None:
            tokens = torch.cat([tokens, self.future_proj(self._future_patches(future))], dim=1)
        return tokens


def window_norm(
    past: torch.Tensor, n_targets: int, eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor]:
    """RevIN without affine weights: the target channels of each window's context centred and
    scaled by their own mean and std; returns (normalised past, std (B, 1, T))."""
    own = past[..., :n_targets]
    mean = own.mean(dim=1, keepdim=True)
    std = own.std(dim=1, keepdim=True, unbiased=False) + eps
    normed = torch.cat([(own - mean) / std, past[..., n_targets:]], dim=-1)
    return normed, std


# ----------------------------------------------------------------------------- text prompts

_TARGET_POINTS = 24
_COVARIATE_POINTS = 12


def _sample(values: np.ndarray, points: int) -> np.ndarray:
    """Every k-th value so that about ``points`` values remain (keeps prompts short)."""
    step = max(1, len(values) // points)
    return values[len(values) - step * (len(values) // step) :: step][-points:]


def _fmt(values: np.ndarray) -> str:
    scale = np.nanmax(np.abs(values)) if len(values) else 0.0
    digits = 2 if scale < 100 else 0
    return " ".join(f"{v:.{digits}f}" for v in values)


def window_prompts(
    frame: pd.DataFrame,
    target_cols: list[str],
    covariates: list[str],
    origins: np.ndarray,
    context_length: int,
    horizon: int,
) -> list[str]:
    """One prompt per origin, in data units, e.g.

    'Thursday 6 November 2014, 00:00. Temperature next: 14.1 ... Demand last: 4.05 ...
    Demand 7 days before: ...'
    """
    index = frame.index
    holiday = frame["holiday"].to_numpy() if "holiday" in frame.columns else None
    values = {c: frame[c].to_numpy(dtype=float) for c in [*target_cols, *covariates]}
    day_steps = max(1, min(horizon, context_length))
    prompts = []
    for o in origins:
        ts = index[o]
        parts = [
            f"{ts.day_name()} {ts.day} {ts.month_name()} {ts.year}, {ts.hour:02d}:{ts.minute:02d}"
        ]
        if holiday is not None and holiday[o] > 0:
            parts.append("public holiday")
        for c in covariates:
            parts.append(
                f"{c} next: {_fmt(_sample(values[c][o : o + horizon], _COVARIATE_POINTS))}"
            )
        for c in target_cols:
            recent = values[c][o - day_steps : o]
            parts.append(f"{c} last: {_fmt(_sample(recent, _TARGET_POINTS))}")
            week = o - context_length
            if week >= 0 and context_length >= 2 * horizon:
                days = round((ts - index[week]).total_seconds() / 86400)
                parts.append(
                    f"{c} {days} days before: "
                    f"{_fmt(_sample(values[c][week : week + horizon], _TARGET_POINTS))}"
                )
        prompts.append(". ".join(parts) + ".")
    return prompts
