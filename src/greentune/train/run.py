"""``run(cfg)``: the entry point behind ``greentune run``, dispatching on the task."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from greentune.config import RunConfig
from greentune.data.sources import resolve
from greentune.train.loop import Progress

Log = Any


def resolve_config(cfg: RunConfig) -> RunConfig:
    """Write the source's defaults into the config, so config.yaml says what was used."""
    if cfg.task == "forecast":
        return dataclasses.replace(cfg, data=resolve(cfg.data))
    return cfg


def run_task(
    cfg: RunConfig, run_dir: Path, log: Log, resume: bool = False, progress: Progress | None = None
) -> dict[str, Any]:
    if cfg.task == "classify":
        from greentune.train.classify import run_classify

        return run_classify(cfg, run_dir, log, resume=resume, progress=progress)
    from greentune.train.forecast import run_forecast

    return run_forecast(cfg, run_dir, log, resume=resume, progress=progress)
