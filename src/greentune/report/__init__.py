"""Reports and recommendations over finished runs.

``write_report(runs, out)`` writes one self-contained HTML page (``report.html`` in the run
directory for one run); ``recommend(runs, target)`` picks the greenest row within ``target`` of
the best among the rows of several runs, on validation when every row has a validation score.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from greentune.io import write_text
from greentune.report.choose import Candidate, Choice, choose, same_windows
from greentune.report.collect import RunView, read_run
from greentune.report.html import page

__all__ = ["REPORT_FILE", "Candidate", "Choice", "recommend", "write_report"]

REPORT_FILE = "report.html"

Paths = Sequence[str | os.PathLike[str]]


def write_report(runs: Paths, out: str | os.PathLike[str] | None = None) -> Path:
    """Write the report of ``runs`` to ``out`` (default: the run's ``report.html`` for one
    run, ``./report.html`` for several) through a temporary file, and return its path."""
    views = [read_run(p) for p in runs]
    if not views:
        from greentune.errors import ConfigError

        raise ConfigError("name at least one run directory to report on")
    choice, note = None, None
    if len(views) > 1:
        note = same_windows(views)
        if note is None:
            target = _target(views[0])
            choice = choose(views, target)
        else:
            note = f"No comparison across runs: {note}."
    path = (
        Path(out)
        if out is not None
        else (views[0].run.path / REPORT_FILE if len(views) == 1 else Path(REPORT_FILE))
    )
    write_text(path, page(views, choice, note))
    return path


def recommend(runs: Paths, target: float) -> Choice:
    """The choice among every row of ``runs`` (see ``greentune.report.choose``)."""
    return choose([read_run(p) for p in runs], target)


def _target(view: RunView) -> float:
    energy = view.metrics.energy
    return energy.target if energy is not None and energy.target is not None else 0.02
