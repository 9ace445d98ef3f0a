"""The run directory: the unit every command reads and writes.

    runs/<name>/
      run.json              schema_version, status (running|complete|failed), task, created
      config.yaml           resolved config, every default written out
      metrics.json          test metrics of the model and every baseline, training figures
      predictions.parquet   long format: model, origin, time, step, target, y_true, y_pred, q*
      model/                Hugging Face layout (see models/forecaster.py, models/classifier.py)
      checkpoints/          step-XXXXXXXX.pt, atomic
      log.txt               what the run printed

Every file is written to a temporary name in the same folder and renamed into place.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from greentune.config import RunConfig, dump_yaml, load_config
from greentune.errors import CheckpointError

SCHEMA_VERSION = 1


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_text(path: Path, text: str) -> None:
    tmp = _tmp(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    """Strict JSON: NaN and infinities (e.g. MAPE of an all-zero target) become null."""
    text = json.dumps(_finite(data), indent=2, default=_json_default, allow_nan=False)
    write_text(path, text + "\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path | dt.datetime | pd.Timestamp):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    tmp = _tmp(path)
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    tmp = _tmp(path)
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def replace_dir(src: Path, dst: Path) -> None:
    """Move a fully written folder into place, replacing an older one."""
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def new_run_dir(cfg: RunConfig) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = cfg.name or f"{cfg.task}-{stamp}"
    path = Path(cfg.output_dir) / name
    if path.exists() and any(path.iterdir()):
        raise CheckpointError(
            f"{path} already exists; pick another name=..., or continue it with --resume {path}"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_run(path: Path, cfg: RunConfig) -> None:
    write_text(path / "config.yaml", dump_yaml(cfg))
    set_status(path, cfg.task, "running")


def set_status(path: Path, task: str, status: str, **extra: Any) -> None:
    info_path = path / "run.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info.setdefault("created", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    info.update(schema_version=SCHEMA_VERSION, task=task, status=status, **extra)
    write_json(info_path, info)


def read_run(path: str | Path) -> tuple[Path, RunConfig]:
    run = Path(path)
    if not (run / "config.yaml").is_file():
        raise CheckpointError(f"{run} is not a run directory (no config.yaml)")
    try:
        raw = yaml.safe_load((run / "config.yaml").read_text()) or {}
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{run}/config.yaml is damaged: {exc}") from None
    version = raw.get("schema_version", SCHEMA_VERSION) if isinstance(raw, dict) else 0
    if version > SCHEMA_VERSION:
        raise CheckpointError(
            f"{run} was written by a newer greentune (schema {version}); upgrade greentune"
        )
    return run, load_config(run / "config.yaml")


def read_metrics(run: Path) -> dict[str, Any]:
    path = run / "metrics.json"
    if not path.is_file():
        raise CheckpointError(f"{run} has no metrics.json; the run did not finish")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is damaged: {exc}") from None
