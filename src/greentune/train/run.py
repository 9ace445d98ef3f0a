"""``run``: the whole of ``greentune run`` as a library call, from config to run directory."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from greentune.config import RunConfig
from greentune.data.sources import resolve
from greentune.energy.session import metered
from greentune.evaluate.green import bill_models
from greentune.rundir import new_run_dir, read_run, set_status, start_run, write_json
from greentune.train.loop import Progress, Window, no_window

Log = Callable[[str], None]


def resolve_config(cfg: RunConfig) -> RunConfig:
    """Write the source's defaults into the config, so config.yaml says what was used."""
    if cfg.task == "forecast":
        return dataclasses.replace(cfg, data=resolve(cfg.data))
    return cfg


def run_logger(run_dir: Path, echo: Log) -> Log:
    """Every message goes to ``echo`` (the console) and to the run's log.txt."""
    log_path = run_dir / "log.txt"

    def log(message: str) -> None:
        echo(message)
        with log_path.open("a") as fh:
            fh.write(message + "\n")

    return log


def run(
    cfg: RunConfig | None = None,
    resume: Path | None = None,
    progress: Progress | None = None,
    echo: Log = print,
) -> tuple[Path, RunConfig, dict[str, Any]]:
    """Run (or resume) a run; returns its directory, resolved config and metrics.

    run.json says ``running`` while it works, then ``complete``, or ``failed`` with the error.
    """
    if resume is not None:
        run_dir, cfg = read_run(resume)
    else:
        cfg = cfg or RunConfig()
        run_dir = new_run_dir(cfg)
    log = run_logger(run_dir, echo)
    try:
        cfg = resolve_config(cfg)
        start_run(run_dir, cfg)
        log(f"run directory: {run_dir}")
        with metered(run_dir, cfg.energy, "run", log) as meter:
            window = meter.window if meter else no_window
            metrics = run_task(cfg, run_dir, log, resume is not None, progress, window)
        if meter is not None:
            metrics = bill_models(metrics, run_dir, cfg.energy)
            write_json(run_dir / "metrics.json", metrics)
    except BaseException as exc:
        set_status(run_dir, cfg.task, "failed", error=str(exc)[:500])
        raise
    set_status(run_dir, cfg.task, "complete")
    return run_dir, cfg, metrics


def run_task(
    cfg: RunConfig,
    run_dir: Path,
    log: Log,
    resume: bool = False,
    progress: Progress | None = None,
    window: Window = no_window,
) -> dict[str, Any]:
    if cfg.task == "classify":
        from greentune.train.classify import run_classify

        return run_classify(cfg, run_dir, log, resume, progress, window)
    from greentune.train.forecast import run_forecast

    return run_forecast(cfg, run_dir, log, resume, progress, window)
