"""``run``: the whole of ``greentune run`` as a library call, from config to run directory."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

from greentune.config import RunConfig
from greentune.distributed import ranks
from greentune.energy.session import metered
from greentune.errors import CheckpointError, GreentuneError, StorageError
from greentune.evaluate.green import bill_models
from greentune.io import storage_error
from greentune.privacy.dp import DPTraining, privacy_notes, privacy_report, private_config
from greentune.rundir import RunDir, RunInfo, clean_stale_temporaries
from greentune.runlock import Holder, RunLock, RunLockedError, read_holder
from greentune.tasks import TASKS
from greentune.tasks.base import check_select_on
from greentune.tracking.base import TRACKERS
from greentune.tracking.session import RunTracking
from greentune.train import pause, recipes  # noqa: F401  (recipes: registers them)
from greentune.train.averaging import averaging_callbacks
from greentune.train.budget import budget_callbacks
from greentune.train.callbacks import (
    CALLBACKS,
    Callback,
    CallbackContext,
    CallbackFactory,
    EnergyWindows,
    Progress,
    ProgressBar,
    build_callbacks,
    resolve_callbacks,
)
from greentune.train.checkpoint import checkpoint_step, list_checkpoints
from greentune.train.optim import check_layer_lr_decay
from greentune.train.recipe import RECIPES, RecipeContext

Log = Callable[[str], None]


def run(
    cfg: RunConfig | None = None,
    resume: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    echo: Log = print,
    callbacks: Iterable[Callback | CallbackFactory] = (),
) -> RunDir:
    """Run (or resume) a run and return its directory; ``RunDir.metrics`` holds the results.

    ``callbacks`` join the training of the run's model (``greentune.train.callbacks``); a
    factory among them is called with the ``CallbackContext`` (config, log, the meter's
    ``read_j``) once the run is metered.
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
    for name in cfg.tracking.to:
        TRACKERS.get(name)
    check_select_on(task, cfg)  # like a refused remedy, before a run directory exists
    # a refused remedy fails before a run directory exists
    remedies = [*task.train_callbacks(cfg), *averaging_callbacks(cfg)]
    check_layer_lr_decay(cfg)
    ranks.init(cfg.train.dist_timeout_s)
    main = ranks.is_main()
    if run_dir is None:
        run_dir = _create_run_dir(cfg)
    before = run_dir.info if resume_path is not None and main else None
    dead = read_holder(run_dir.path) if before is not None and before.status == "crashed" else None
    lock = _lock_run(run_dir)
    log = run_logger(run_dir.log_path, echo) if main else _silent
    pause.install()
    tracking: RunTracking | None = None
    completed = False
    try:
        cfg = private_config(task, task.resolve_config(cfg))
        if main:
            if before is not None and before.status == "crashed" and lock and not lock.inherited:
                record_crash(run_dir, before, dead, log)
            for path in clean_stale_temporaries(run_dir.path):
                log(f"removed {path.name}, left by an interrupted write")
            run_dir.start(cfg)
            tracking = RunTracking.start(cfg, run_dir, log, resume_path is not None)
        log(f"run directory: {run_dir.path}")
        if resume_path is None:
            for note in cfg.train.chosen:
                log(f"default: {note}")
        with metered(run_dir.path, cfg.energy, "run", log) as meter:
            shown = [ProgressBar(progress)] if progress is not None and main else []
            read_j = (lambda: sum(meter.read().values())) if meter.enabled else None
            cb_ctx = CallbackContext(cfg, log, read_j)
            named = build_callbacks(cb_ctx)
            given = resolve_callbacks(callbacks, cb_ctx)
            energy = EnergyWindows(meter.window, meter.tick)
            dp = cfg.privacy.dp
            private = [DPTraining(dp, cfg.train, cfg.seed, log, energy.note)] if dp.enabled else []
            for cb in remedies:
                log(f"training with {cb}")
            if cfg.train.layer_lr_decay < 1:
                log(
                    f"layer-wise learning rates (train.layer_lr_decay="
                    f"{cfg.train.layer_lr_decay:g}): each block of the pretrained stack at "
                    "that factor of the rate of the block above, heads and layers outside the "
                    "stack at the peak"
                )

            def budget() -> list[Callback]:
                return budget_callbacks(cfg.train, read_j, log)

            ctx = RecipeContext(
                cfg=cfg,
                run=run_dir,
                log=log,
                resume=resume_path is not None,
                callbacks=[
                    energy,
                    *private,
                    *remedies,
                    *budget(),
                    *shown,
                    *named,
                    *([tracking] if tracking else []),
                    *given,
                ],
                window=meter.window,
                budget=budget,
            )
            for note in privacy_notes(task, cfg):
                log(f"privacy: {note}")
            metrics = recipe(ctx)
            if private:  # the DP callback's account, and which rows are non-private
                rows = list(metrics.test)
                metrics.privacy = privacy_report(task, cfg, private[0], rows, metrics.model)
        if main:
            if meter.enabled:
                metrics = bill_models(metrics, run_dir.ledger, cfg.energy, task.quality_of(cfg))
            run_dir.write_metrics(metrics)
            stale = ("error", "paused_at_step", "resume_command") if resume_path else ()
            run_dir.set_status("complete", **dict.fromkeys(stale))
            completed = True
            if cfg.eval.report:
                _write_report(run_dir, cfg, log)
            if tracking is not None:
                tracking.finish(run_dir, "complete")
    except BaseException as exc:
        if completed:  # the run is done; only its report or tracking was cut short
            if tracking is not None:
                tracking.finish(run_dir, "complete")  # once: a finished tracker does nothing
            ranks.shutdown()
            raise
        # Unwinding (not os._exit) keeps what matters: the ledger has the energy spent, the
        # checkpoints stay, run.json says why the run stopped.
        # A SIGTERM that lands while an error unwinds (torchrun stopping the survivors of a
        # dead rank) does not turn the failure into a pause: the error is the reason.
        cause = exc.__context__ if pause.is_stop(exc) and exc.__context__ is not None else exc
        try:
            if main and pause.is_stop(cause):
                _record_pause(run_dir, cfg.task, exc, log)
            elif main:
                run_dir.set_status("failed", task=cfg.task, error=str(cause)[:500])
        except StorageError:
            pass  # the disk that failed the run cannot take its status: readers say crashed
        if tracking is not None:
            tracking.finish(run_dir, "paused" if pause.is_stop(cause) else "failed")
        if isinstance(exc, pause.TrainingPaused):
            ranks.barrier()  # no rank leaves before rank 0 wrote the checkpoint and run.json
            ranks.shutdown()
            raise SystemExit(pause.EXIT_CODE) from None
        ranks.shutdown()
        raise
    finally:
        if lock is not None:
            lock.release()
    ranks.shutdown()
    return run_dir


def _write_report(run_dir: RunDir, cfg: RunConfig, log: Log) -> None:
    """report.html, metered as a ``report`` session of its own. The run is complete before
    this starts: a report that fails says so and leaves the run as it is."""
    from greentune.report import REPORT_FILE, write_report

    try:
        with metered(run_dir.path, cfg.energy, "report") as meter, meter.window("report"):
            path = write_report([run_dir.path])
    except Exception as exc:  # a figure that cannot be drawn must not fail a finished run
        log(
            f"report: {REPORT_FILE} not written ({exc}); greentune report {run_dir.path} "
            "tries again"
        )
        return
    log(f"report: {path}")


def run_logger(log_path: Path, echo: Log) -> Log:
    """Every message goes to ``echo`` (the console) and to the run's log.txt."""

    def log(message: str) -> None:
        echo(message)
        try:
            with log_path.open("a") as fh:
                fh.write(message + "\n")
        except OSError as exc:
            raise storage_error(log_path, exc) from None

    return log


def record_crash(run_dir: RunDir, before: RunInfo, dead: Holder | None, log: Log) -> None:
    """run.json keeps every crash this run survived (``dead``: the lock's record of the
    process that died, read before this one took the lock); the log says what happened."""
    newest = list_checkpoints(run_dir.checkpoint_dir)
    step = checkpoint_step(newest[-1]) if newest else None
    log(
        f"{run_dir.path} crashed: {before.error}. Resuming "
        + (f"from the checkpoint at step {step}" if step is not None else "from the start")
    )
    crashes = list(before.extra.get("crashes") or [])
    crashes.append(
        {
            "detected": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "holder": asdict(dead.runner()) if dead else None,
            "resumed_from_step": step,
        }
    )
    run_dir.set_status("running", crashes=crashes)


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


def _lock_run(run_dir: RunDir) -> RunLock | None:
    """Rank 0 becomes the run's one writer; every rank gets rank 0's error if it cannot."""
    lock, error = None, ""
    if ranks.is_main():
        try:
            lock = run_dir.lock("run")
        except GreentuneError as exc:
            error = str(exc)
    error = ranks.broadcast(error)
    if error:
        raise RunLockedError(error)
    return lock


def _silent(message: str) -> None:
    """Ranks other than 0 print nothing: one run, one log."""
