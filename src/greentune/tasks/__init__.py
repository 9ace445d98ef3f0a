"""Tasks: one folder each (``forecast/``, ``classify/``), registered in ``TASKS``.

A task owns what is particular to it: its batches, prediction, validation loss, artifacts (save
and load the model with its scaler, columns or labels), its ``Predictor``, how a finished run is
scored again, and what compression needs. The recipes in ``greentune.train.recipes`` wire these
pieces into a run; nothing else branches on the task. A new task is a new folder that registers
a ``Task`` here, plus its recipe.
"""

from collections.abc import Callable
from pathlib import Path

from greentune.rundir import RunDir
from greentune.tasks import classify, forecast  # noqa: F401  (register the built-in tasks)
from greentune.tasks.base import TASKS, LoadedRun, Predictor, Prepared, Task
from greentune.tasks.members import members_task

__all__ = ["TASKS", "LoadedRun", "Predictor", "Prepared", "Task", "ensemble", "get_task"]


def get_task(name: str) -> Task:
    """The registered task ``name``; a ConfigError lists the valid names otherwise."""
    return TASKS.get(name)


def ensemble(
    specs: list[str],
    out: str | Path,
    kinds: tuple[str, ...] | None = None,
    target: str | None = None,
    log: Callable[[str], None] = print,
) -> RunDir:
    """``greentune ensemble`` (docs/ensemble.md): the finished runs ``specs`` (``RUN`` or
    ``RUN:ROW``) combined into the new run directory ``out`` by their task; ``kinds`` None: the
    task's default combinations; ``target``: the green target (default: the first member's)."""
    return TASKS.get(members_task(specs)).ensemble(specs, out, kinds, target, log)
