"""Run under torchrun by test_distributed.py: the DDP gradient of one global batch (split over
the ranks by the training loop's own micro-step) against one process's gradient of the whole
batch. Writes the largest relative difference to the JSON file named on the command line."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from greentune.config import build_config
from greentune.data.sources import RawTable
from greentune.data.validate import clean_frame
from greentune.data.windows import build_forecast_data
from greentune.distributed import ranks
from greentune.tasks.forecast.batches import make_batches
from greentune.tasks.forecast.model import build_model
from greentune.train.callbacks import Callbacks
from greentune.train.loop import _Engine, _micro_step, make_accelerator
from tests.conftest import make_series, series_overrides


def grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def main() -> None:
    ranks.init(120)
    torch.set_num_threads(1)
    cfg = build_config(overrides=series_overrides(Path("s.csv"), Path("unused")))
    frame, report = clean_frame(RawTable(make_series(), "s.csv"), cfg.data)
    data = build_forecast_data(frame, cfg.data, report)
    model, _ = build_model(cfg, data, total_steps=10)
    torch.manual_seed(0)
    with torch.no_grad():  # move off the zero head and zero LoRA B, so every tensor has a gradient
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    alone = copy.deepcopy(model)
    batches = make_batches(cfg, data, data.train.origins, None)
    idx = np.arange(9)  # an odd batch: the ranks get 5 and 4 samples
    accelerator = make_accelerator(cfg.train)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    engine = _Engine(wrapped, batches, cfg.train, 0, accelerator, optimizer, None, [],
                     Callbacks(), None, 0.0)  # fmt: skip
    part = _micro_step(engine, idx, 1)
    loss = ranks.all_sum([part])[0]
    batch = batches.get(idx)
    full = alone.loss(alone(batch), batch)
    full.backward()
    a, b = grads(alone), grads(model)
    out = {
        "world_size": ranks.world_size(),
        "ddp_is_active": type(wrapped).__name__ == "DistributedDataParallel",
        "max_relative_grad_difference": float((a - b).abs().max() / a.abs().max()),
        "loss_difference": abs(loss - float(full)),
    }
    if ranks.is_main():
        Path(sys.argv[1]).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
