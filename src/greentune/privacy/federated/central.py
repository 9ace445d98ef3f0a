"""The centralised reference: the same network trained on every client's windows pooled.

Only a simulation can have it (it pools the clients' data in one process): it answers "what
does federation cost in quality". It gets the same budget as the federated run: ``rounds``
rounds of ``local_steps`` x clients steps (the samples all clients together trained on), the
same start (the federated skip fit, the seeded network), and the best round on the pooled
validation loss; each client's own scaler still standardises its windows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from greentune.config import RunConfig, replace
from greentune.privacy.federated.client import (
    Local,
    load_trainable,
    open_client,
    skip_from_arrays,
    test_scores,
    trainable_arrays,
)
from greentune.tasks.base import mean_loss
from greentune.tasks.forecast.batches import ForecastBatches, stack_windows
from greentune.tasks.forecast.model import build_model
from greentune.tasks.forecast.skip import transfer_skip
from greentune.train.loop import train

Log = Callable[[str], None]


@dataclass
class PooledBatches:
    """Several clients' windows as one training set (``len`` and ``get``, as the loop wants)."""

    parts: list[ForecastBatches]

    def __post_init__(self) -> None:
        self.offsets = np.cumsum([0, *(len(p) for p in self.parts)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def get(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        idx = np.sort(np.asarray(idx))
        part = np.searchsorted(self.offsets, idx, side="right") - 1
        return stack_windows(
            [(self.parts[p], int(i - self.offsets[p])) for p, i in zip(part, idx, strict=True)]
        )


def central_reference(
    cfg: RunConfig, names: list[str], skip: dict[str, np.ndarray], log: Log
) -> dict[str, dict[str, float]]:
    """{client: test scores} of the network trained on the pooled windows."""
    fed = cfg.federated
    clients = [open_client(cfg, name, "central") for name in names]
    first = clients[0]
    steps = fed.local_steps * len(clients)
    round_cfg = replace(first.cfg, train={"max_steps": steps})
    init = skip_from_arrays(skip) if skip else None
    if first.cfg.model.skip_init == "transfer":  # the start every client reads, pooled nothing
        init = transfer_skip(first.cfg, first.data, lambda m: None)
    model, _ = build_model(round_cfg, first.data, fed.rounds * steps, init)
    for c in clients:
        c.model = model  # test_scores and mean_loss score this one network per client
    pooled = PooledBatches([c.train_b for c in clients])
    best = trainable_arrays(model)
    best_loss = _pooled_val(clients)
    for r in range(1, fed.rounds + 1):
        torch.manual_seed(cfg.seed + 1000 * r)  # dropout, as a client's round seeds it
        train(model, pooled, round_cfg.train, cfg.seed + 1000 * r)
        loss = _pooled_val(clients)
        if loss < best_loss:
            best, best_loss = trainable_arrays(model), loss
    log(
        f"reference central: {fed.rounds} rounds of {steps} steps on the pooled windows, "
        f"best validation loss {best_loss:.5f}"
    )
    load_trainable(model, best)
    scores = {c.name: test_scores(c, None) for c in clients}
    for c in clients:
        c.model = None
    return scores


def _pooled_val(clients: list[Local]) -> float:
    total = sum(len(c.val_b) for c in clients)
    assert clients[0].model is not None
    model = clients[0].model
    return (
        sum(mean_loss(model, c.val_b, c.cfg.eval.batch_size) * len(c.val_b) for c in clients)
        / total
    )
