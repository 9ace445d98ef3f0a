"""The trackers: MLflow (through its client, no global state), TensorBoard (torch's
``SummaryWriter``) and Weights & Biases (offline). Each registers in ``TRACKERS``; its library
is imported only when a run asks for it."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from greentune.tracking.base import TRACKERS, TrackerContext, TrackingError, require

MLFLOW_STATUS = {"complete": "FINISHED", "failed": "FAILED", "paused": "KILLED"}
MLFLOW_PARAM_CHARS = 6000  # MLflow refuses longer parameter values
MLFLOW_BATCH = 100  # params per log_batch (MLflow's limit; metrics allow 1,000)


@TRACKERS.register("mlflow")
class MlflowTracker:
    """One MLflow run per greentune run, in experiment ``tracking.experiment``."""

    name = "mlflow"

    def __init__(self, ctx: TrackerContext) -> None:
        require("mlflow")
        from mlflow.tracking import MlflowClient

        # "Creating initial MLflow database tables..." on every new store is noise in a run's log
        logging.getLogger("mlflow").setLevel(logging.WARNING)

        self.uri = ctx.mlflow_uri
        try:
            self.client = MlflowClient(tracking_uri=ctx.mlflow_uri)
            if ctx.resume_id:
                self.run_id: str | None = ctx.resume_id
                self.client.update_run(ctx.resume_id, status="RUNNING")
            else:
                found = self.client.get_experiment_by_name(ctx.experiment)
                experiment = (
                    found.experiment_id
                    if found
                    else self.client.create_experiment(
                        ctx.experiment, artifact_location=ctx.mlflow_artifacts
                    )
                )
                run = self.client.create_run(experiment, run_name=ctx.run_name)
                self.run_id = run.info.run_id
        except Exception as exc:  # MlflowException, connection and database errors alike
            raise TrackingError(
                f"MLflow at {ctx.mlflow_uri} cannot be used ({str(exc)[:300]}); start its "
                "server, fix tracking.mlflow_uri, or remove mlflow from tracking.to"
            ) from None

    def log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:MLFLOW_PARAM_CHARS]) for k, v in params.items()]
        for i in range(0, len(items), MLFLOW_BATCH):
            self.client.log_batch(str(self.run_id), params=items[i : i + MLFLOW_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        items = [Metric(k, float(v), now_ms, step or 0) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(str(self.run_id), metrics=items[i : i + 1000])

    def log_history(self, rows: Mapping[int, Mapping[str, float]]) -> None:
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now_ms, step) for step, row in rows.items() for k, v in row.items()
        ]
        for i in range(0, len(items), 1000):
            self.client.log_batch(str(self.run_id), metrics=items[i : i + 1000])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(str(self.run_id), tags=[RunTag(k, v) for k, v in tags.items()])

    def log_files(self, paths: list[Path]) -> None:
        for path in paths:
            self.client.log_artifact(str(self.run_id), str(path))

    def finish(self, status: str) -> None:
        self.client.set_terminated(str(self.run_id), status=MLFLOW_STATUS.get(status, "FAILED"))


@TRACKERS.register("tensorboard")
class TensorBoardTracker:
    """Event files in ``tracking.tensorboard_dir``: scalars per step, the config and tags as
    text, and the run's hyper-parameters with its results in the HParams tab. TensorBoard
    keeps no files: ``log_files`` lists their paths as text."""

    name = "tensorboard"
    run_id: str | None = None

    def __init__(self, ctx: TrackerContext) -> None:
        require("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(ctx.tensorboard_dir))
        self.params: dict[str, str] = {}
        self.results: dict[str, float] = {}

    def log_params(self, params: Mapping[str, str]) -> None:
        self.params.update(params)
        rows = "\n".join(f"| {k} | {v} |" for k, v in params.items())
        self.writer.add_text("config", f"| key | value |\n|---|---|\n{rows}")

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, float(value), 0 if step is None else step)
        if step is None:
            self.results.update({k: float(v) for k, v in metrics.items()})

    def log_history(self, rows: Mapping[int, Mapping[str, float]]) -> None:
        for step, row in rows.items():
            self.log_metrics(row, step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.writer.add_text("tags", "\n".join(f"- {k}: {v}" for k, v in tags.items()))

    def log_files(self, paths: list[Path]) -> None:
        self.writer.add_text("files", "\n".join(f"- {p}" for p in paths))

    def finish(self, status: str) -> None:
        from torch.utils.tensorboard.summary import hparams

        if self.results:  # one point per run in the HParams tab: settings -> results
            for summary in hparams(self.params, self.results):
                self.writer.file_writer.add_summary(summary)  # type: ignore[union-attr,attr-defined]
        self.writer.add_text("status", status)
        self.writer.close()


@TRACKERS.register("wandb")
class WandbTracker:
    """A Weights & Biases run in offline mode, under ``<run dir>/wandb`` (``wandb sync``
    uploads it later)."""

    name = "wandb"

    def __init__(self, ctx: TrackerContext) -> None:
        os.environ.setdefault("WANDB_SILENT", "true")
        wandb = require("wandb")
        self.wandb = wandb
        try:
            self.run: Any = wandb.init(
                # console off: W&B would otherwise wrap stdout, which the progress bar owns
                settings=wandb.Settings(console="off", silent=True),
                mode="offline",
                dir=str(ctx.run_dir),
                project=ctx.experiment,
                name=ctx.run_name,
                id=ctx.resume_id,
                resume="allow" if ctx.resume_id else None,
            )
        except Exception as exc:
            raise TrackingError(
                f"wandb could not start an offline run ({str(exc)[:300]}); remove wandb from "
                "tracking.to"
            ) from None
        self.run_id: str | None = self.run.id

    def log_params(self, params: Mapping[str, str]) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if step is None:
            self.run.summary.update(dict(metrics))
        else:
            self.run.log(dict(metrics), step=step)

    def log_history(self, rows: Mapping[int, Mapping[str, float]]) -> None:
        for step, row in rows.items():
            self.run.log(dict(row), step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.run.summary.update({f"tag/{k}": v for k, v in tags.items()})

    def log_files(self, paths: list[Path]) -> None:
        artifact = self.wandb.Artifact(f"{self.run.name}-files", type="greentune-run")
        for path in paths:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def finish(self, status: str) -> None:
        # Rows logged with an explicit step stay open until a later step arrives; the last one
        # was left to finish() to write, and under load its offline file sometimes lacked it
        # (the last train/loss step, once in a suite). Commit it ourselves, in order, first.
        try:
            self.run.log({}, commit=True)
        finally:
            self.run.finish(exit_code=0 if status == "complete" else 1)
