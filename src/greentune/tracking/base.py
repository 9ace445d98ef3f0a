"""What every tracker does, its registry, and the names and values it is given.

A tracker receives plain values: parameters (the flattened config, as strings), numeric
metrics at a step or without one, tags, and files. greentune decides what to send
(``greentune.tracking.session``); a tracker only knows its library.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from greentune.errors import TrackingError
from greentune.registry import Registry

__all__ = ["TRACKERS", "Tracker", "TrackerContext", "TrackingError", "flatten", "metric_name"]


@dataclass(frozen=True)
class TrackerContext:
    """What a tracker is built from."""

    run_dir: Path
    run_name: str
    experiment: str
    mlflow_uri: str
    tensorboard_dir: Path
    resume_id: str | None = None
    """The tracker's own id for this run from an earlier session (a resumed run continues
    the same tracked run)."""
    mlflow_artifacts: str | None = None
    """Where a new MLflow experiment keeps its files; None: the store decides (a server's own
    artifact root). MLflow's default, ``./mlruns``, would put them wherever the command ran."""


class Tracker(Protocol):
    """One tracking backend for one run."""

    name: str
    run_id: str | None
    """The backend's id of the tracked run (kept in run.json for a resume), if it has one."""

    def log_params(self, params: Mapping[str, str]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_history(self, rows: Mapping[int, Mapping[str, float]]) -> None:
        """Several steps' metrics at once (step -> metrics, in step order): one request
        where the backend allows it."""
        ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_files(self, paths: list[Path]) -> None: ...

    def finish(self, status: str) -> None:
        """``status``: complete, failed or paused (the run's status)."""
        ...


TRACKERS: Registry[Callable[[TrackerContext], Tracker]] = Registry("tracking.to entry")


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """A nested mapping as ``a.b.c -> str(value)`` (lists and tuples as their repr)."""
    out: dict[str, str] = {}
    if isinstance(value, Mapping):
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    out[prefix.rstrip(".")] = "null" if value is None else str(value)
    return out


_BAD = re.compile(r"[^A-Za-z0-9_\-./ ]")


def metric_name(*parts: str) -> str:
    """``test/lightgbm/mape`` from parts, with characters trackers refuse replaced by ``_``
    (MLflow accepts letters, digits, ``_ - . /`` and space)."""
    return "/".join(_BAD.sub("_", p) for p in parts)


def require(
    module: str, extra: str = "tracking", hint: str = ", or remove it from tracking.to"
) -> Any:
    """Import an optional library, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        raise TrackingError(
            f"{extra} needs {package} ({exc}); install it with pip install "
            f"'greentune[{extra}]'{hint}"
        ) from None
