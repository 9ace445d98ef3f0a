"""Tasks: one folder each (``forecast/``, ``classify/``), registered in ``TASKS``.

A task owns what is particular to it: its batches, prediction, validation loss, artifacts (save
and load the model with its scaler, columns or labels), its ``Predictor``, how a finished run is
scored again, and what compression needs. The recipes in ``greentune.train.recipes`` wire these
pieces into a run; nothing else branches on the task. A new task is a new folder that registers
a ``Task`` here, plus its recipe.
"""

from greentune.tasks import classify, forecast  # noqa: F401  (register the built-in tasks)
from greentune.tasks.base import TASKS, LoadedRun, Predictor, Prepared, Task

__all__ = ["TASKS", "LoadedRun", "Predictor", "Prepared", "Task", "get_task"]


def get_task(name: str) -> Task:
    """The registered task ``name``; a ConfigError lists the valid names otherwise."""
    return TASKS.get(name)
