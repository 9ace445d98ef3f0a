"""Atomic file writes: every file is written to a temporary name in its folder, then renamed.

A crash mid-write leaves the previous file (or none), never a truncated one. A write that fails
(disk full, read-only file system, permission denied) removes its temporary file and raises one
StorageError that names the file and what to do. These helpers know nothing of greentune's
files; ``greentune.rundir`` and ``greentune.energy.ledger`` use them.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from greentune import faults
from greentune.errors import StorageError

_ELSEWHERE = "or write the run elsewhere (output_dir=...)"
_HINTS = {
    errno.ENOSPC: f"the disk is full: free some space, {_ELSEWHERE}",
    errno.EDQUOT: f"the disk quota is used up: free some space, {_ELSEWHERE}",
    errno.EROFS: f"the file system is read-only: {_ELSEWHERE.removeprefix('or ')}",
    errno.EACCES: f"permission denied: make the folder writable, {_ELSEWHERE}",
    errno.EPERM: f"permission denied: make the folder writable, {_ELSEWHERE}",
}


def is_write_error(exc: OSError) -> bool:
    """Disk full, quota, read-only file system, permission denied."""
    return exc.errno in _HINTS


def storage_error(path: Path, exc: OSError) -> StorageError:
    """One clear error for a file that cannot be written."""
    hint = _HINTS.get(exc.errno or 0, "check the disk and the folder's permissions")
    return StorageError(f"cannot write {path}: {exc.strerror or exc}; {hint}")


_OS_ERROR = re.compile(r"os error (\d+)")


def write_failure(exc: BaseException, folder: Path) -> OSError | None:
    """The OSError behind a failed write, also when a library wrapped it: torch.save raises
    RuntimeError ("file write failed"), safetensors its own error ("... (os error 28)"). Else,
    when the folder's file system is full or read-only now, that. None: not a write failure."""
    if isinstance(exc, OSError):
        return exc
    if not isinstance(exc, Exception):
        return None
    match = _OS_ERROR.search(str(exc))
    if match:
        code = int(match.group(1))
        return OSError(code, os.strerror(code))
    try:
        fs = os.statvfs(folder)
    except OSError:
        return None
    if fs.f_flag & os.ST_RDONLY:
        return OSError(errno.EROFS, os.strerror(errno.EROFS))
    if fs.f_bavail == 0:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` then rename over ``path``; on failure the temporary file goes and the
    old ``path`` stays as it was."""
    tmp = _tmp(path)
    try:
        faults.check_write(path.name)
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        failure = write_failure(exc, path.parent)
        if failure is not None:
            raise storage_error(path, failure) from None
        raise


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


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
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


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
    try:
        tmp.mkdir(parents=True)
        faults.check_write(dst.name)
        yield tmp
        replace_dir(tmp, dst)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        failure = write_failure(exc, dst.parent)
        if failure is None or not is_write_error(failure):  # e.g. a file it could not read
            raise
        where = Path(failure.filename) if failure.filename else dst
        raise storage_error(where, failure) from None


def files_digest(folders: list[tuple[Path, str]], extra: bytes = b"") -> str:
    """12 hex digits of a SHA-256 over the files of ``folders`` (each file's name, as the
    folder's prefix + its path inside it, and its bytes) and ``extra``: the same files give the
    same digest on every machine."""
    digest = hashlib.sha256()
    for folder, prefix in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update((prefix + str(path.relative_to(folder))).encode() + b"\0")
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    digest.update(extra)
    return digest.hexdigest()[:12]
