"""What a report shows of one run, read once through ``RunDir``: config, metrics, ledger,
test forecasts and compressed variants. Nothing here draws or writes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import pandas as pd

from greentune.config import RunConfig
from greentune.energy.ledger import Ledger
from greentune.errors import CheckpointError
from greentune.results import Quality, RunMetrics
from greentune.rundir import RunDir
from greentune.tasks import TASKS


@dataclass
class RunView:
    """A finished run as the report reads it."""

    run: RunDir
    config: RunConfig
    metrics: RunMetrics
    quality: Quality
    ledger: Ledger
    predictions: pd.DataFrame | None
    """Test predictions of every row (None when the file is missing)."""
    compression: dict[str, Any] | None
    """compression.json, when ``greentune compress`` was run on it."""
    status: str
    parent: str | None = None
    """A compressed variant: the run it was made from."""

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def recommended(self) -> str:
        """The row ``run`` recommends: the greenest within the target, else the best on
        validation, else the fine-tuned model."""
        energy, rows = self.metrics.energy, self.metrics.test
        # a compressed variant keeps its parent's verdict, naming rows it renamed: skip those
        for name in (energy.greenest if energy else None, energy.best if energy else None):
            if name and name in rows:
                return name
        return self.metrics.model


def read_run(path: str | os.PathLike[str]) -> RunView:
    """The run at ``path``, or a ``CheckpointError`` that says why it cannot be reported."""
    run = RunDir.open(path)
    info = run.info
    if not (run.path / "metrics.json").is_file():
        raise CheckpointError(
            f"{run.path} has no metrics.json (status {info.status}): a report needs a finished "
            f"run; finish it (greentune run --resume {run.path}) or run it again"
        )
    metrics = run.metrics
    try:
        predictions: pd.DataFrame | None = run.predictions
    except CheckpointError:
        predictions = None
    compression = None
    compression_path = run.path / "compression.json"
    if compression_path.is_file():
        try:
            compression = json.loads(compression_path.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{compression_path} is damaged: {exc}") from None
    return RunView(
        run=run,
        config=run.config,
        metrics=metrics,
        quality=TASKS.get(metrics.task).quality_of(run.config),
        ledger=run.ledger,
        predictions=predictions,
        compression=compression,
        status=info.status,
        parent=info.parent,
    )


def described(view: RunView) -> list[tuple[str, str]]:
    """What was trained, on what, as (label, value) pairs for the summary."""
    cfg, m = view.config, view.metrics
    out = [("task", m.task), ("model", m.model)]
    backbone = cfg.model.backbone
    out.append(("backbone", backbone + ("" if cfg.model.pretrained else " (random init)")))
    out.append(("fine-tuning", cfg.peft.method))
    data = m.data or {}
    if data:  # a forecasting run describes its series and windows
        out.append(("data", str(data.get("source", cfg.data.source))))
        span = f"{data.get('start')} to {data.get('end')}"
        out.append(("rows", f"{data.get('rows')} every {data.get('step')}, {span}"))
        windows = ", ".join(f"{k} {v}" for k, v in (data.get("windows") or {}).items())
        horizon = f"context {cfg.data.context_length}, horizon {cfg.data.horizon} steps"
        out.append(("windows", f"{windows}; {horizon}"))
    if m.labels:
        out.append(("data", str(cfg.text.path)))
        out.append(("classes", ", ".join(m.labels)))
    t = m.training
    if t is not None:
        stop = t.stop_reason or ("early stopping" if t.stopped_early else "planned epochs")
        out.append(
            (
                "training",
                f"{t.steps} steps, {t.epochs_run} epochs, best epoch {t.best_epoch} "
                f"({stop}), {t.train_s:.1f} s, {t.trainable_parameters:,} of "
                f"{t.total_parameters:,} parameters trained",
            )
        )
    if m.privacy:
        eps = m.privacy.get("epsilon")
        out.append(("privacy", f"DP-SGD, epsilon {eps}, delta {m.privacy.get('delta')}"))
    energy = m.energy
    if energy is not None:
        out.append(("energy", f"{', '.join(energy.kinds)} (how the joules were obtained)"))
        out.append(("carbon intensity", energy.carbon or "unknown"))
    out.append(("status", view.status))
    return out
