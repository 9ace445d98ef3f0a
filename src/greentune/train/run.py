"""``run``: the whole of ``greentune run`` as a library call, from config to run directory."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from greentune.config import RunConfig
from greentune.distributed import ranks
from greentune.energy.session import metered
from greentune.errors import CheckpointError, GreentuneError
from greentune.evaluate.green import bill_models
from greentune.rundir import RunDir
from greentune.tasks import TASKS
from greentune.train import pause, recipes  # noqa: F401  (recipes: registers them)
from greentune.train.callbacks import (
    CALLBACKS,
    Callback,
    CallbackContext,
    EnergyWindows,
    Progress,
    ProgressBar,
    build_callbacks,
)
from greentune.train.checkpoint import checkpoint_step, list_checkpoints
from greentune.train.recipe import RECIPES, RecipeContext

Log = Callable[[str], None]


def run(
    cfg: RunConfig | None = None,
    resume: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    echo: Log = print,
    callbacks: Iterable[Callback] = (),
) -> RunDir:
    """Run (or resume) a run and return its directory; ``RunDir.metrics`` holds the results.

    ``callbacks`` join the training of the run's model (``greentune.train.callbacks``).
    run.json says ``running`` while it works, then ``complete``, ``failed`` with the error, or
    ``paused`` after a SIGTERM (see ``greentune.train.pause``; the process then exits with 143).
    """
    cfg = cfg or RunConfig()
    resume_path = Path(resume) if resume is not None else restarted_run(cfg)
    run_dir = RunDir.open(resume_path) if resume_path is not None else None
    if run_dir is not None:
        cfg = run_dir.config
    task, recipe = TASKS.get(cfg.task), RECIPES.get(cfg.task)
    for name in cfg.train.callbacks:  # a typo fails now, not after the data is loaded
        CALLBACKS.get(name)
    ranks.init(cfg.train.dist_timeout_s)
    main = ranks.is_main()
    if run_dir is None:
        run_dir = _create_run_dir(cfg)
    log = run_logger(run_dir.log_path, echo) if main else _silent
    pause.install()
    try:
        cfg = task.resolve_config(cfg)
        if main:
            run_dir.start(cfg)
        log(f"run directory: {run_dir.path}")
        with metered(run_dir.path, cfg.energy, "run", log) as meter:
            shown = [ProgressBar(progress)] if progress is not None and main else []
            named = build_callbacks(CallbackContext(cfg, log))
            ctx = RecipeContext(
                cfg=cfg,
                run=run_dir,
                log=log,
                resume=resume_path is not None,
                callbacks=[EnergyWindows(meter.window), *shown, *named, *callbacks],
                window=meter.window,
            )
            metrics = recipe(ctx)
        if main:
            if meter.enabled:
                metrics = bill_models(metrics, run_dir.ledger, cfg.energy, task.quality)
            run_dir.write_metrics(metrics)
    except BaseException as exc:
        # Unwinding (not os._exit) keeps what matters: the ledger has the energy spent, the
        # checkpoints stay, run.json says why the run stopped.
        if main and pause.is_stop(exc):
            _record_pause(run_dir, cfg.task, exc, log)
        elif main:
            run_dir.set_status("failed", task=cfg.task, error=str(exc)[:500])
        if isinstance(exc, pause.TrainingPaused):
            ranks.barrier()  # no rank leaves before rank 0 wrote the checkpoint and run.json
            ranks.shutdown()
            raise SystemExit(pause.EXIT_CODE) from None
        ranks.shutdown()
        raise
    if main:
        stale = ("error", "paused_at_step", "resume_command") if resume_path is not None else ()
        run_dir.set_status("complete", **dict.fromkeys(stale))
    ranks.shutdown()
    return run_dir


def run_logger(log_path: Path, echo: Log) -> Log:
    """Every message goes to ``echo`` (the console) and to the run's log.txt."""

    def log(message: str) -> None:
        echo(message)
        with log_path.open("a") as fh:
            fh.write(message + "\n")

    return log


def _record_pause(run_dir: RunDir, task: str, exc: BaseException, log: Log) -> None:
    """run.json: status paused, the step of the checkpoint to continue from, the command."""
    if isinstance(exc, pause.TrainingPaused):
        step: int | None = exc.step
        how = f"paused after optimizer step {step} (SIGTERM); checkpoint written"
    else:
        newest = list_checkpoints(run_dir.checkpoint_dir)
        step = checkpoint_step(newest[-1]) if newest else None
        how = "stopped by SIGTERM outside the training loop; " + (
            f"the newest checkpoint is at step {step}" if newest else "no checkpoint yet"
        )
    world = ranks.world_size()
    command = f"greentune run --resume {run_dir.path}" + (f" --nproc {world}" if world > 1 else "")
    run_dir.set_status("paused", task=task, paused_at_step=step, resume_command=command, error=None)
    log(f"{how}: continue with {command}")


def restarted_run(cfg: RunConfig) -> Path | None:
    """Under torchrun ``--max-restarts``, a restarted worker group continues its named run."""
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0 or not cfg.name:
        return None
    path = Path(cfg.output_dir) / cfg.name
    return path if (path / "config.yaml").is_file() else None


def _create_run_dir(cfg: RunConfig) -> RunDir:
    """Rank 0 creates the run directory; every rank gets its path, or rank 0's error."""
    made: Path | str
    try:
        made = RunDir.create(cfg).path if ranks.is_main() else ""
    except GreentuneError as exc:
        made = f"error: {exc}"
    made = ranks.broadcast(made)
    if isinstance(made, str):
        raise CheckpointError(made.removeprefix("error: "))
    return RunDir(made)


def _silent(message: str) -> None:
    """Ranks other than 0 print nothing: one run, one log."""
