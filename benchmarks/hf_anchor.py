"""What the HF Trainer anchors share: greentune's windows as a torch Dataset, and the network
wrapped the way the Trainer calls models (forward(**batch) -> {'loss': ...})."""

from __future__ import annotations

import numpy as np
import torch


class WindowDataset(torch.utils.data.Dataset):
    def __init__(self, batches) -> None:
        self.b = batches

    def __len__(self) -> int:
        return len(self.b)

    def __getitem__(self, i: int):
        return {k: v[0] for k, v in self.b.get(np.array([i])).items()}


class LossWrapper(torch.nn.Module):
    """The Trainer wants forward(**batch) -> {'loss': ...}; the network is the same."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, **batch):
        out = self.model(batch)
        return {"loss": self.model.loss(out, batch), "logits": out}
