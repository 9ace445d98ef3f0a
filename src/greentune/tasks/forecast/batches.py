"""Forecast windows as batches: numeric patches for the patch encoder, plus token ids (each
window serialised as a prompt) for the text encoder."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from typing import Any

import numpy as np
import torch

from greentune.config import RunConfig
from greentune.data.text import pad_tokens
from greentune.data.windows import ForecastData
from greentune.models.encoders import window_prompts

TEXT_MAX_TOKENS = 192


@dataclass
class ForecastBatches:
    """Batches of one split for the loop and for prediction."""

    data: ForecastData
    origins: np.ndarray
    tokens: list[np.ndarray] | None = None
    pad_id: int = 0
    base: np.ndarray | None = None
    """(N, H, T) a hybrid's base forecasts (scaled), one per origin."""

    def __len__(self) -> int:
        return len(self.origins)

    def get(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        batch = {k: torch.from_numpy(v) for k, v in self.data.batch(self.origins[idx]).items()}
        if self.tokens is not None:
            batch.update(pad_tokens([self.tokens[i] for i in idx], self.pad_id))
        if self.base is not None:
            batch["base"] = torch.from_numpy(self.base[idx])
        return batch


def make_batches(
    cfg: RunConfig,
    data: ForecastData,
    origins: np.ndarray,
    tokenizer: Any,
    base: np.ndarray | None = None,
) -> ForecastBatches:
    """The windows starting at ``origins``; with a tokenizer (text encoder) also as prompts;
    ``base``: a hybrid's base forecasts of those windows."""
    if tokenizer is None:
        return ForecastBatches(data, origins, base=base)
    covariates = [c for c in data.known_cols if c in (cfg.data.covariates or ())]
    prompts = window_prompts(
        data.frame, data.target_cols, covariates, origins, data.context_length, data.horizon
    )
    enc = tokenizer(prompts, truncation=True, max_length=TEXT_MAX_TOKENS)
    tokens = [np.asarray(ids, dtype=np.int64) for ids in enc["input_ids"]]
    return ForecastBatches(data, origins, tokens, int(tokenizer.pad_token_id or 0), base)


def stack_windows(windows: list[tuple[ForecastBatches, int]]) -> dict[str, torch.Tensor]:
    """One batch from windows of different inputs: (their batches, window index) pairs. Token
    prompts are padded to the longest of this batch."""
    numeric = []
    for _, run in groupby(windows, key=lambda w: id(w[0])):  # consecutive windows of one input
        pairs = list(run)
        numeric.append(pairs[0][0].data.batch(pairs[0][0].origins[[i for _, i in pairs]]))
    batch = {k: torch.from_numpy(np.concatenate([n[k] for n in numeric])) for k in numeric[0]}
    first = windows[0][0]
    if first.base is not None:
        batch["base"] = torch.from_numpy(
            np.stack([part.base[i] for part, i in windows if part.base is not None])
        )
    if first.tokens is not None:
        rows = [part.tokens[i] for part, i in windows if part.tokens is not None]
        batch.update(pad_tokens(rows, first.pad_id))
    return batch
