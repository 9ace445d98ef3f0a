"""One run's tracking: the trackers ``tracking.to`` names, fed as a training callback (loss
and learning rate per step, validation loss) and, when the run ends, with its results (test
and validation scores of every row, energy and emissions per phase and per row, the
recommendation) and files (config, metrics, ledger, report, log).

A tracker that cannot start stops the run before any work (``TrackingError``); one that fails
later is reported once in the log and left out: a tracking server that goes away does not cost
the training."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from greentune.config import RunConfig
from greentune.rundir import RunDir
from greentune.tracking import backends  # noqa: F401  (registers the trackers)
from greentune.tracking.base import TRACKERS, Tracker, TrackerContext, flatten, metric_name
from greentune.train.callbacks import Callback, LoopState

FILES = ("config.yaml", "metrics.json", "energy.json", "report.html", "log.txt")
FLUSH_EVERY = 200
"""Steps of loss buffered between sends (a remote server gets one request per flush)."""


def context(cfg: RunConfig, run_dir: RunDir, resume_id: str | None = None) -> TrackerContext:
    t = cfg.tracking
    output = Path(cfg.output_dir).resolve()
    uri = t.mlflow_uri or f"sqlite:///{output / 'mlflow.db'}"
    # a local database keeps the files beside it; a server has its own artifact root
    artifacts = (output / "mlartifacts").as_uri() if uri.startswith("sqlite") else None
    return TrackerContext(
        mlflow_artifacts=artifacts,
        run_dir=run_dir.path,
        run_name=run_dir.name,
        experiment=t.experiment,
        mlflow_uri=uri,
        tensorboard_dir=Path(t.tensorboard_dir or run_dir.path / "tensorboard"),
        resume_id=resume_id,
    )


class RunTracking(Callback):
    """The trackers of one run, and the callback that feeds them during training."""

    def __init__(self, trackers: list[Tracker], log: Callable[[str], None]) -> None:
        self.trackers = trackers
        self.log = log
        self.pending: dict[int, dict[str, float]] = {}
        self.finished = False

    @classmethod
    def start(
        cls, cfg: RunConfig, run_dir: RunDir, log: Callable[[str], None], resume: bool
    ) -> RunTracking | None:
        """Start the trackers (continuing their runs after a resume) and send the flattened
        config; None when ``tracking.to`` is empty."""
        if not cfg.tracking.to:
            return None
        ids = (run_dir.info.extra.get("tracking") or {}) if resume else {}
        trackers: list[Tracker] = []
        for name in cfg.tracking.to:
            try:
                trackers.append(TRACKERS.get(name)(context(cfg, run_dir, ids.get(name))))
            except BaseException:  # the ones already started end as failed, not running
                cls(trackers, log).finish(run_dir, "failed")
                raise
        run_dir.set_status(
            "running", tracking={t.name: t.run_id for t in trackers if t.run_id is not None}
        )
        self = cls(trackers, log)
        from greentune import __version__

        params = flatten(asdict(cfg))
        self._each("log_params", params)
        self._each(
            "set_tags", {"greentune.version": __version__, "greentune.run_dir": str(run_dir.path)}
        )
        log(f"tracking: {', '.join(t.name for t in trackers)}")
        return self

    # ------------------------------------------------------------------ training

    def on_step_end(self, state: LoopState, loss: float) -> None:
        row = {"train/loss": float(loss)}
        if state.history and math.isfinite(state.history[-1].get("lr", math.nan)):
            row["train/lr"] = float(state.history[-1]["lr"])
        self.pending[state.step] = row
        if len(self.pending) >= FLUSH_EVERY:
            self.flush()

    def on_validation(self, state: LoopState, val_loss: float) -> bool:
        self.flush()
        row = state.val_history[-1] if state.val_history else {"val_loss": val_loss}
        step = int(row.get("step", state.step))
        scores = {f"val/{k[4:]}": float(v) for k, v in row.items() if k.startswith("val_")}
        self._each("log_metrics", scores, step)
        return False

    def on_end(self, state: LoopState) -> None:
        self.flush()

    def flush(self) -> None:
        pending, self.pending = self.pending, {}
        if pending:
            self._each("log_history", dict(sorted(pending.items())))

    # ------------------------------------------------------------------ the end

    def finish(self, run_dir: RunDir, status: str) -> None:
        """Results and files of a complete run, then every tracker's end; once (a second call
        does nothing), and never raising: the run is over whatever a tracker does."""
        if self.finished:
            return
        self.finished = True
        self.flush()
        if status == "complete":
            try:
                metrics, tags = results(run_dir)
            except Exception as exc:
                self.log(f"tracking: the run's results could not be read ({exc})")
                metrics, tags = {}, {}
            self._each("log_metrics", metrics, None)
            self._each("set_tags", tags)
            files = [run_dir.path / f for f in FILES if (run_dir.path / f).is_file()]
            self._each("log_files", files)
        self._each("finish", status)

    def _each(self, method: str, *args: Any) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # a tracker's failure must not cost the run
                self.trackers.remove(tracker)
                self.log(f"tracking: {tracker.name} left out after an error in {method}: {exc}")


def results(run_dir: RunDir) -> tuple[dict[str, float], dict[str, str]]:
    """Numbers and tags a finished run reports: ``test/<row>/<score>``, ``val/<row>/<score>``,
    ``test/<row>/energy_wh`` and ``emissions_g``, ``energy/<phase>/energy_wh`` and
    ``emissions_g`` over every ``run`` session, ``energy/run/...`` in total; tags say each
    figure's kind (``test.<row>.energy_kind``, ``energy.<phase>.kind``, ``energy.kind``)."""
    m = run_dir.metrics
    out: dict[str, float] = {}
    tags: dict[str, str] = {"greentune.model": m.model, "greentune.task": m.task}
    for row, result in m.test.items():
        out.update(_numbers(("test", row), result.scores))
        if result.bill is not None:
            out.update(
                _numbers(
                    ("test", row),
                    {"energy_wh": result.bill.energy_wh, "emissions_g": result.bill.emissions_g},
                )
            )
            tags[f"test.{row}.energy_kind"] = result.bill.energy_kind or "unknown"
    for row, scores in (m.validation or {}).items():
        out.update(_numbers(("val", row), scores))
    phases = run_dir.energy_by_phase("run")
    for phase, frame_row in phases.iterrows():
        values = {"energy_wh": frame_row["energy_wh"], "emissions_g": frame_row.get("emissions_g")}
        out.update(_numbers(("energy", str(phase)), values))
        tags[f"energy.{phase}.kind"] = ",".join(frame_row.get("kinds") or [])
    if not phases.empty:  # the phases' sum: every run session, as the phases themselves
        grams = phases["emissions_g"]
        total = {
            "energy_wh": float(phases["energy_wh"].sum()),
            "emissions_g": None if grams.isna().any() else float(grams.sum()),
        }
        out.update(_numbers(("energy", "run"), total))
    if m.energy is not None:
        e = m.energy
        tags.update(
            {
                "energy.kind": ",".join(e.kinds),
                "carbon.source": e.carbon or "unknown",
                "best": e.best or "",
                "greenest": e.greenest or "",
                "chosen_on": e.chosen_on or "",
            }
        )
    return out, tags


def _numbers(prefix: tuple[str, ...], values: Mapping[str, Any]) -> dict[str, float]:
    return {
        metric_name(*prefix, k): float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
