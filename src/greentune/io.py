"""Atomic file writes: every file is written to a temporary name in its folder, then renamed.

A crash mid-write leaves the previous file (or none), never a truncated one. These helpers know
nothing of greentune's files; ``greentune.rundir`` and ``greentune.energy.ledger`` use them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_text(path: Path, text: str) -> None:
    tmp = _tmp(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    """Strict JSON: NaN and infinities (e.g. MAPE of an all-zero target) become null."""
    text = json.dumps(finite(data), indent=2, default=_json_default, allow_nan=False)
    write_text(path, text + "\n")


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
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


@contextmanager
def staged_dir(dst: Path) -> Iterator[Path]:
    """Yield an empty scratch folder beside ``dst``; when the block succeeds it replaces ``dst``
    as a whole, when it fails it is removed and ``dst`` stays as it was."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted save
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, dst)
