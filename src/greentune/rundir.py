"""The run directory: the unit every command reads and writes, through ``RunDir`` alone.

    runs/<name>/
      run.json              schema_version, task, status, created (+ error, paused_at_step,
                            resume_command; parent and compression for a compressed variant)
      config.yaml           resolved config, every default written out
      metrics.json          test scores of the model and every baseline, training, data, energy
      energy.json/.csv      the ledger: one row per metered window (greentune.energy.ledger)
      predictions.parquet   test predictions of every model, long format
      model/                Hugging Face layout (docs/model-format.md)
      checkpoints/          step-XXXXXXXX.pt, atomic
      energy-journal/       windows of commands still running (or crashed), merged into the
                            ledger by the next command (greentune.energy.journal)
      run.lock              held by the one process writing the run (greentune.runlock)
      log.txt               what the run printed

docs/run-dir.md documents every key. Every file is written to a temporary name in the same
folder and renamed into place (``greentune.io``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from greentune.config import RunConfig, dump_yaml, load_config
from greentune.energy.ledger import Ledger
from greentune.errors import CheckpointError, GreentuneError
from greentune.io import write_json, write_parquet, write_text
from greentune.results import METRICS_SCHEMA_VERSION, RunMetrics
from greentune.runlock import LOCK_FILE, RunLock, acquire, live_holder, read_holder

SCHEMA_VERSION = 1
CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.parquet"
VALIDATION_FILE = "validation.parquet"
COMPRESSION_FILE = "compression.json"
ORIGINAL = ("fp32", "original")
STATUSES = ("running", "complete", "failed", "paused", "rejected")


@dataclass(frozen=True)
class RunInfo:
    """``run.json``: what the run is and where it stands."""

    task: str
    status: str
    """running, complete, failed (see ``error``), paused (see ``resume_command``), rejected
    (a compressed variant beyond the quality guard), unknown when run.json is missing, or
    crashed: run.json says running but no live process holds the run's lock (never written,
    always read; see ``error`` and ``resume_command``)."""
    created: str | None = None
    """UTC, ISO 8601."""
    error: str | None = None
    paused_at_step: int | None = None
    resume_command: str | None = None
    parent: str | None = None
    """A compressed variant: the run it was made from."""
    compression: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)


class RunDir:
    """One run directory: typed access to its config, status, metrics, ledger and predictions.

    ``RunDir.open(path)`` for an existing run, ``RunDir.create(cfg)`` for a new one. A
    ``RunDir`` is also a path (``os.fspath``), so it goes wherever a path goes.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._config: RunConfig | None = None

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # ------------------------------------------------------------------ create and open

    @classmethod
    def create(cls, cfg: RunConfig) -> RunDir:
        """A new, empty run directory ``output_dir/name`` (name: task + timestamp if unset)."""
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path(cfg.output_dir) / (cfg.name or f"{cfg.task}-{stamp}")
        if path.exists() and _started_before(path):
            raise CheckpointError(
                f"{path} already exists; pick another name=..., or continue it with --resume {path}"
            )
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDir:
        """An existing run directory; refuses a folder that is not one, or a newer schema."""
        run = cls(path)
        config = run.path / CONFIG_FILE
        if not config.is_file():
            if (run.path / LOCK_FILE).is_file() and not _started_before(run.path):
                raise CheckpointError(
                    f"{run.path} was stopped before its run began (no {CONFIG_FILE} yet): "
                    "there is nothing to resume; start it again with the same command"
                )
            raise CheckpointError(f"{run.path} is not a run directory (no {CONFIG_FILE})")
        try:
            raw = yaml.safe_load(config.read_text()) or {}
        except yaml.YAMLError as exc:
            raise CheckpointError(f"{config} is damaged: {exc}") from None
        version = raw.get("schema_version", SCHEMA_VERSION) if isinstance(raw, dict) else 0
        _check_version(version, config)
        return run

    # ------------------------------------------------------------------ files

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def log_path(self) -> Path:
        return self.path / "log.txt"

    @property
    def config(self) -> RunConfig:
        """Read once per ``RunDir`` (opening a model reads it several times)."""
        if self._config is None:
            self._config = load_config(self.path / CONFIG_FILE)
        return self._config

    def write_config(self, cfg: RunConfig) -> None:
        write_text(self.path / CONFIG_FILE, dump_yaml(cfg))
        self._config = cfg

    # ------------------------------------------------------------------ status

    @property
    def info(self) -> RunInfo:
        raw = self._read_json(RUN_FILE, missing_ok=True)
        if raw is None:
            return RunInfo(task=self._config_task(), status="unknown")
        _check_version(raw.get("schema_version", SCHEMA_VERSION), self.path / RUN_FILE)
        names = {f.name for f in dataclasses.fields(RunInfo)} - {"extra"}
        known = {k: v for k, v in raw.items() if k in names}
        if "task" not in known:
            known["task"] = self._config_task()
        known.setdefault("status", "unknown")
        if known["status"] == "running":
            holder = live_holder(self.path)
            # running needs a live `run` behind it; a lock held by another command (evaluate,
            # compress) was free when it was taken, so the run's process had died
            if holder is None or not holder.command.startswith("run"):
                known.update(status="crashed", **self._crash_note())
        return RunInfo(**known, extra={k: v for k, v in raw.items() if k not in names})

    def _crash_note(self) -> dict[str, Any]:
        holder = read_holder(self.path)
        runner = holder.runner() if holder else None
        ran = runner is not None and runner.command.startswith("run")
        who = runner.describe() if runner and ran else "the process that ran it"
        newest = list_checkpoints(self.checkpoint_dir)
        where = (
            f"its newest checkpoint is at step {checkpoint_step(newest[-1])}"
            if newest
            else "it wrote no checkpoint yet"
        )
        return {
            "error": f"{who} died without finishing (killed or crashed); {where}",
            "resume_command": f"greentune run --resume {self.path}",
        }

    def lock(self, command: str) -> RunLock:
        """Become this run's one writer (``with run.lock("evaluate"):``); a second process
        gets RunLockedError naming the first."""
        return acquire(self.path, command)

    def check_finished(self, purpose: str) -> None:
        """Refuse a run that is still being written, crashed, paused or failed: ``purpose``
        ('evaluate it') needs its saved model and metrics."""
        info = self.info
        if info.status in ("complete", "rejected", "unknown"):
            return
        if info.status == "running":
            holder = live_holder(self.path)
            who = holder.describe() if holder else "another process"
            raise CheckpointError(
                f"{self.path} is still being written by {who}; wait for it to finish, then "
                f"{purpose}"
            )
        why = f": {info.error}" if info.error else ""
        command = info.resume_command or f"greentune run --resume {self.path}"
        raise CheckpointError(
            f"{self.path} is {info.status}{why}. Continue it with {command}, then {purpose}"
        )

    @property
    def status(self) -> str:
        return self.info.status

    def start(self, cfg: RunConfig) -> None:
        """Write the resolved config and mark the run ``running``."""
        self.write_config(cfg)
        self.set_status("running", task=cfg.task)

    def set_status(self, status: str, **extra: Any) -> None:
        """Update run.json; ``extra`` keys are written as given (None writes null, which
        clears a stale value such as an earlier error)."""
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}; use one of {', '.join(STATUSES)}")
        info = self._read_json(RUN_FILE, missing_ok=True) or {}
        info.setdefault("created", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
        task = extra.pop("task", None) or info.get("task") or self._config_task()
        info.update(schema_version=SCHEMA_VERSION, task=task, status=status, **extra)
        write_json(self.path / RUN_FILE, info)

    # ------------------------------------------------------------------ results

    @property
    def metrics(self) -> RunMetrics:
        raw = self._read_json(METRICS_FILE)
        if raw is None:  # pragma: no cover - _read_json raises when missing
            raise CheckpointError(f"{self.path} has no {METRICS_FILE}")
        _check_version(raw.get("schema_version", 1), self.path / METRICS_FILE)
        try:
            return RunMetrics.from_dict(raw)
        except (KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"{self.path / METRICS_FILE} is not a greentune metrics file ({exc!r})"
            ) from None

    def write_metrics(self, metrics: RunMetrics) -> None:
        if metrics.schema_version > METRICS_SCHEMA_VERSION:  # pragma: no cover - guarded on read
            raise CheckpointError(f"cannot write metrics schema {metrics.schema_version}")
        write_json(self.path / METRICS_FILE, metrics.to_dict())

    @property
    def ledger(self) -> Ledger:
        """Every metered window of every command on this run (empty when none was metered),
        with the journals of commands still running or crashed (not yet in energy.json)."""
        ledger = Ledger.load(self.path)
        ledger.fold_journals(self.path, live=True)
        return ledger

    def energy_by_phase(self, command: str | None = None) -> pd.DataFrame:
        """Energy (J and Wh), emissions and duration per phase (data, train, test, baseline,
        save, evaluate, ...), over the top-level windows of ``command`` (default: all)."""
        ledger = self.ledger
        rows = [r for r in ledger.rows if command is None or r["command"] == command]
        by_phase = ledger.totals(rows)["by_phase"]
        frame = pd.DataFrame.from_dict(by_phase, orient="index")
        if frame.empty:
            return pd.DataFrame(columns=["windows", "duration_s", "energy_j", "energy_wh"])
        frame.index.name = "phase"
        frame.insert(frame.columns.get_loc("energy_j") + 1, "energy_wh", frame["energy_j"] / 3600)
        return frame

    @property
    def predictions(self) -> pd.DataFrame:
        path = self.path / PREDICTIONS_FILE
        if not path.is_file():
            raise CheckpointError(f"{self.path} has no {PREDICTIONS_FILE}; the run did not finish")
        return pd.read_parquet(path)

    def write_predictions(self, frame: pd.DataFrame) -> None:
        write_parquet(self.path / PREDICTIONS_FILE, frame)

    @property
    def validation_predictions(self) -> pd.DataFrame:
        """Every row's forecasts of the validation windows (a forecasting run's; what
        ``greentune ensemble`` fits its weights on)."""
        path = self.path / VALIDATION_FILE
        if not path.is_file():
            raise CheckpointError(
                f"{self.path} has no {VALIDATION_FILE}: it did not finish, is not a forecasting "
                "run, or was made before runs kept their validation forecasts; run it again"
            )
        return pd.read_parquet(path)

    def write_validation_predictions(self, frame: pd.DataFrame) -> None:
        write_parquet(self.path / VALIDATION_FILE, frame)

    # ------------------------------------------------------------------ variants

    def write_compression(self, report: dict[str, Any]) -> None:
        """compression.json: ``greentune compress``'s comparison of this run's variants."""
        write_json(self.path / COMPRESSION_FILE, report)

    def variants(self) -> dict[str, RunDir]:
        """Compressed variants of this run that exist on disk, by name (from compression.json,
        which ``greentune compress`` writes here)."""
        raw = self._read_json(COMPRESSION_FILE, missing_ok=True) or {}
        out: dict[str, RunDir] = {}
        for row in raw.get("variants", []):
            path = Path(str(row.get("run") or ""))
            if row.get("run") and (path / CONFIG_FILE).is_file():
                out[str(row["name"])] = RunDir(path)
        return out

    def variant(self, name: str | None) -> RunDir:
        """This run (None, ``fp32``) or one of its compressed variants: by method
        (``int8-dynamic``), by the variant run's folder name, or by path."""
        if name is None or name in ORIGINAL:
            return self
        built = self.variants()
        for key in (name, f"{self.name}-{name}"):
            if key in built:
                return RunDir.open(built[key].path)
        for path in (self.path.parent / f"{self.name}-{name}", Path(name)):
            if (path / CONFIG_FILE).is_file():
                return RunDir.open(path)
        listed = ", ".join(["fp32", *built]) if built else "fp32 (none compressed yet)"
        raise CheckpointError(
            f"{self.path} has no variant {name!r}; variants: {listed}. Build one with "
            f"greentune compress {self.path} -m {name}"
        )

    # ------------------------------------------------------------------ helpers

    def _config_task(self) -> str:
        """The task in config.yaml, or 'unknown' while there is none (a run being created)."""
        try:
            return self.config.task if (self.path / CONFIG_FILE).is_file() else "unknown"
        except GreentuneError:
            return "unknown"

    def _read_json(self, name: str, missing_ok: bool = False) -> dict[str, Any] | None:
        path = self.path / name
        if not path.is_file():
            if missing_ok:
                return None
            raise CheckpointError(f"{self.path} has no {name}; the run did not finish")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path} is damaged: {exc}") from None
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path} is damaged: expected a JSON object")
        return raw


def _started_before(path: Path) -> bool:
    """Does the folder hold anything of a run beyond the lock and the log of a start that was
    killed before it wrote its config (a fresh start may reuse that folder)?"""
    names = {p.name for p in path.iterdir()}
    if CONFIG_FILE in names:
        return True
    return bool(names - {LOCK_FILE, "log.txt"}) or live_holder(path) is not None


def clean_stale_temporaries(path: Path) -> list[Path]:
    """Remove temporary files and folders that killed processes left in the run directory and
    its checkpoints (``.NAME.tmp-PID`` of a dead PID, ``.NAME.tmp`` staging folders: call it
    holding the lock); a ``.NAME.old-PID`` left by a swap cut in half goes back to ``NAME``
    when that is missing. Returns what it removed or put back."""
    import psutil

    removed = []
    for folder in (path, path / "checkpoints"):
        if not folder.is_dir():
            continue
        for item in folder.iterdir():
            match = _TEMPORARY.match(item.name)
            if match is None:
                continue
            name, kind, pid = match.groups()
            if pid is not None and psutil.pid_exists(int(pid)) and int(pid) != os.getpid():
                continue  # another live process is writing it
            if kind == "old" and not (folder / name).exists():
                os.replace(item, folder / name)  # killed mid-swap: the previous one goes back
                removed.append(item)
                continue
            if item.is_dir():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)
            removed.append(item)
    return removed


_TEMPORARY = re.compile(r"^\.(.+)\.(tmp|old)(?:-(\d+))?$")
_CHECKPOINT = re.compile(r"^step-(\d{8})\.pt$")


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files (``step-NNNNNNNN.pt``) in step order; temporary files excluded."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _CHECKPOINT.match(p.name))


def checkpoint_step(path: Path) -> int:
    """The optimizer step a checkpoint file was written at (from its name)."""
    match = _CHECKPOINT.match(path.name)
    if match is None:
        raise CheckpointError(f"{path}: not a checkpoint name (expected step-NNNNNNNN.pt)")
    return int(match.group(1))


def read_status(path: str | os.PathLike[str]) -> str | None:
    """The status in ``path``/run.json, or None when there is none (or it cannot be read):
    for supervisors (the scheduler, the torchrun launcher) that must not fail on a half-made
    run."""
    try:
        status = RunDir(path).info.status
    except (GreentuneError, OSError):
        return None
    return None if status == "unknown" else status


def _check_version(version: Any, path: Path) -> None:
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(
            f"{path} has schema_version {version!r}, which no greentune wrote; "
            "the file is damaged or not greentune's"
        )
    if version > SCHEMA_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer greentune (schema {version}, this one reads "
            f"{SCHEMA_VERSION}); upgrade greentune (pip install -U greentune) to open it"
        )
