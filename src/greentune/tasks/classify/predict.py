"""Class scores for many texts, sharded over processes, padding kept small."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from greentune.distributed import ranks
from greentune.tasks.classify.batches import TextBatches


@torch.no_grad()
def predict_logits(model: Any, batches: TextBatches, batch_size: int) -> np.ndarray:
    """Logits (N, classes) in input order. With several processes each scores its shard and
    the shards are gathered once; texts are sorted by length so padding stays small."""
    model.eval()
    mine = ranks.shard(len(batches))
    order = np.argsort([len(batches.tokens[i]) for i in mine], kind="stable")
    logits: np.ndarray | None = None
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        out = model(batches.get(mine[idx])).float().numpy()
        if logits is None:
            logits = np.empty((len(mine), out.shape[-1]), dtype=np.float32)
        logits[idx] = out
    if logits is None:
        logits = np.zeros((0, 0), dtype=np.float32)
    return ranks.gather_shards(logits, len(batches))


def predict_labels(model: Any, batches: TextBatches, batch_size: int) -> np.ndarray:
    """Class ids (N,) in input order."""
    return predict_logits(model, batches, batch_size).argmax(-1)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)
