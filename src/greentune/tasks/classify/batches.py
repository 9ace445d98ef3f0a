"""Texts as token ids; each batch is padded to its longest text only (see STACK.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from greentune.data.text import pad_tokens


@dataclass
class TextBatches:
    tokens: list[np.ndarray]
    labels: np.ndarray
    pad_id: int
    texts: list[str] | None = None
    """The texts behind ``tokens`` (augmentation changes them and tokenises again)."""
    encode: Callable[[list[str]], list[np.ndarray]] | None = None
    """Texts -> token-id rows, as ``tokens`` were made."""

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per text (``train.group_by_length`` batches by them)."""
        return np.fromiter((len(t) for t in self.tokens), dtype=np.int64, count=len(self.tokens))

    def get(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        batch = pad_tokens([self.tokens[i] for i in idx], self.pad_id)
        batch["labels"] = torch.from_numpy(self.labels[idx])
        return batch


def tokenize(tokenizer: Any, texts: list[str], labels: np.ndarray, max_length: int) -> TextBatches:
    def encode(rows: list[str]) -> list[np.ndarray]:
        enc = tokenizer(rows, truncation=True, max_length=max_length)
        return [np.asarray(t, dtype=np.int64) for t in enc["input_ids"]]

    return TextBatches(encode(texts), labels, int(tokenizer.pad_token_id or 0), texts, encode)
