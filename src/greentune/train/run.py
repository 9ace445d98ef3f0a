"""``run``: the whole of ``greentune run`` as a library call, from config to run directory."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from greentune.config import RunConfig
from greentune.data.sources import resolve
from greentune.distributed import ranks
from greentune.energy.session import metered
from greentune.errors import CheckpointError, GreentuneError
from greentune.evaluate.green import bill_models
from greentune.rundir import new_run_dir, read_run, set_status, start_run, write_json
from greentune.train import pause
from greentune.train.checkpoint import checkpoint_step, list_checkpoints
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

    run.json says ``running`` while it works, then ``complete``, ``failed`` with the error, or
    ``paused`` after a SIGTERM (see ``greentune.train.pause``; the process then exits with 143).
    """
    cfg = cfg or RunConfig()
    resume = resume or restarted_run(cfg)
    if resume is not None:
        run_dir, cfg = read_run(resume)
    ranks.init(cfg.train.dist_timeout_s)
    main = ranks.is_main()
    if resume is None:
        run_dir = _create_run_dir(cfg)
    log = run_logger(run_dir, echo) if main else _silent
    pause.install()
    try:
        cfg = resolve_config(cfg)
        if main:
            start_run(run_dir, cfg)
        log(f"run directory: {run_dir}")
        with metered(run_dir, cfg.energy, "run", log) as meter:
            window = meter.window if meter else no_window
            metrics = run_task(
                cfg, run_dir, log, resume is not None, progress if main else None, window
            )
        if meter is not None and main:
            metrics = bill_models(metrics, run_dir, cfg.energy)
            write_json(run_dir / "metrics.json", metrics)
    except BaseException as exc:
        # Unwinding (not os._exit) keeps what matters: the ledger has the energy spent, the
        # checkpoints stay, run.json says why the run stopped.
        if main and pause.is_stop(exc):
            _record_pause(run_dir, cfg, exc, log)
        elif main:
            set_status(run_dir, cfg.task, "failed", error=str(exc)[:500])
        if isinstance(exc, pause.TrainingPaused):
            ranks.barrier()  # no rank leaves before rank 0 wrote the checkpoint and run.json
            ranks.shutdown()
            raise SystemExit(pause.EXIT_CODE) from None
        ranks.shutdown()
        raise
    if main:
        stale = ("error", "paused_at_step", "resume_command") if resume is not None else ()
        set_status(run_dir, cfg.task, "complete", **dict.fromkeys(stale))
    ranks.shutdown()
    return run_dir, cfg, metrics


def _record_pause(run_dir: Path, cfg: RunConfig, exc: BaseException, log: Log) -> None:
    """run.json: status paused, the step of the checkpoint to continue from, the command."""
    if isinstance(exc, pause.TrainingPaused):
        step: int | None = exc.step
        how = f"paused after optimizer step {step} (SIGTERM); checkpoint written"
    else:
        newest = list_checkpoints(run_dir / "checkpoints")
        step = checkpoint_step(newest[-1]) if newest else None
        how = "stopped by SIGTERM outside the training loop; " + (
            f"the newest checkpoint is at step {step}" if newest else "no checkpoint yet"
        )
    world = ranks.world_size()
    command = f"greentune run --resume {run_dir}" + (f" --nproc {world}" if world > 1 else "")
    set_status(run_dir, cfg.task, "paused", paused_at_step=step, resume_command=command, error=None)
    log(f"{how}: continue with {command}")


def restarted_run(cfg: RunConfig) -> Path | None:
    """Under torchrun ``--max-restarts``, a restarted worker group continues its named run."""
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0 or not cfg.name:
        return None
    path = Path(cfg.output_dir) / cfg.name
    return path if (path / "config.yaml").is_file() else None


def _create_run_dir(cfg: RunConfig) -> Path:
    """Rank 0 creates the run directory; every rank gets its path, or rank 0's error."""
    made: Path | str
    try:
        made = new_run_dir(cfg) if ranks.is_main() else ""
    except GreentuneError as exc:
        made = f"error: {exc}"
    made = ranks.broadcast(made)
    if isinstance(made, str):
        raise CheckpointError(made.removeprefix("error: "))
    return made


def _silent(message: str) -> None:
    """Ranks other than 0 print nothing: one run, one log."""


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
