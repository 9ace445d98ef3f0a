"""An ensemble of runs (``greentune ensemble``) as a model you can load, predict with and serve.

``greentune ensemble`` writes ``ensemble.json`` beside its metrics (``greentune.ensemble_file``:
the members and each combination's exact weights). ``RunsPredictor`` loads each member's run
once through ``Predictor.from_run`` (a network, or a kept row of a forecasting run) and combines
their predictions as the ensemble combined their saved ones, so it reproduces the ensemble's
``predictions.parquet``. How predictions combine is the task's (``Merge``): forecasts per
horizon step, class probabilities per class.

A member whose run is gone or changed since the ensemble was made (its test scores differ from
those recorded) is refused: the weights were fitted on the old model's forecasts.

Members that are rows of one run (its network and its kept baselines) are prepared and run
together (``Predictor.prepare_many``/``predict_many``): the run's windows are built once, its
network runs once, and each baseline forecasts once for every row that reads it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from greentune.ensemble_file import (
    ENSEMBLE_FILE,
    Combination,
    SavedEnsemble,
    load_ensemble,
    member_run,
    resolve_row,
    scored_when_made,
)
from greentune.errors import ConfigError
from greentune.rundir import RunDir
from greentune.tasks.base import Predictor, Prepared


class Merge(Protocol):
    """How a task combines its members' predictions (one DataFrame each, for one input)."""

    def __call__(self, combination: Combination, frames: list[pd.DataFrame]) -> pd.DataFrame: ...


class RunsPredictor(Predictor):
    """An ensemble of runs, loaded once: each member's predictor, combined by ``merge``.

    ``row`` picks what it predicts with: an ensemble row (``ensemble-weighted``, ...), one
    member alone by its name in the table (``<run>/<row>``), or ``recommended``; the default
    is the ensemble's model (its first kind)."""

    variant = "fp32"

    def __init__(
        self,
        run: RunDir,
        saved: SavedEnsemble,
        members: dict[str, Predictor],
        merge: Merge,
        row: str | None = None,
        runs: dict[str, Path] | None = None,
    ) -> None:
        self.run, self.saved, self.members, self.merge = run, saved, members, merge
        self.runs = runs or {name: Path(name) for name in members}
        """Each member's run folder: members of one run are predicted together."""
        self.task = next(iter(members.values())).task
        self.row_spec = row
        self.row = resolve_row(run, saved, row)
        self.cfg = run.config

    @classmethod
    def load(cls, run: RunDir, merge: Merge) -> RunsPredictor:
        saved = load_ensemble(run)
        members: dict[str, Predictor] = {}
        runs: dict[str, Path] = {}
        loaded: dict[Path, Predictor] = {}  # each run once: its rows share its network
        for ref in saved.members:
            member = member_run(run, ref)
            if member.path not in loaded:
                loaded[member.path] = Predictor.from_run(member.path)
            base = loaded[member.path]
            network = ref.row == member.metrics.model  # a classifier keeps no other row
            members[ref.name] = base if network else base.with_row(ref.row)
            runs[ref.name] = member.path
        return cls(run, saved, members, merge, runs=runs)

    def with_row(self, row: str) -> RunsPredictor:
        assert self.run is not None
        return RunsPredictor(self.run, self.saved, self.members, self.merge, row, self.runs)

    @property
    def used(self) -> list[str]:
        """The members the served row reads."""
        return list(self.members) if self.row in self.saved.rows else [str(self.row)]

    @property
    def first(self) -> Predictor:
        """The first member the row reads: its data layout is every member's."""
        return self.members[self.used[0]]

    @property
    def info(self) -> dict[str, Any]:
        return super().info | {"row": self.row}

    def version(self) -> str:
        """12 hex digits over ``ensemble.json``, the row and each member's own files."""
        assert self.run is not None
        digest = hashlib.sha256((self.run.path / ENSEMBLE_FILE).read_bytes())
        digest.update(str(self.row).encode())
        for name in self.used:
            member = self.members[name]
            digest.update(name.encode() + b"\0" + member.version().encode())
        return digest.hexdigest()[:12]

    def groups(self) -> list[list[str]]:
        """The members the row reads, by run (in the order their runs first appear)."""
        out: dict[Path, list[str]] = {}
        for name in self.used:
            out.setdefault(self.runs[name], []).append(name)
        return list(out.values())

    def prepare(self, frame: Any, **options: Any) -> Prepared:
        groups = self.groups()
        parts = []
        for group in groups:
            views = self._views(group)
            parts.append(views[0].prepare_many(views, frame, **options))
        return Prepared(self, max(p.size for p in parts), (groups, parts))

    def predict_prepared(self, items: list[Prepared]) -> list[pd.DataFrame]:
        if not items:
            return []
        assert all(item.predictor is self for item in items), "prepared by another predictor"
        groups: list[list[str]] = items[0].payload[0]
        by_member: list[dict[str, pd.DataFrame]] = [{} for _ in items]
        for i, group in enumerate(groups):
            views = self._views(group)
            out = views[0].predict_many(views, [item.payload[1][i] for item in items])
            for k, frames in enumerate(out):
                by_member[k].update(zip(group, frames, strict=True))
        return [self._merge([mine[n] for n in self.used]) for mine in by_member]

    def predict_file(self, path: str | Path, **options: Any) -> pd.DataFrame:
        """``predict`` on a data file, each member reading it as its run reads files."""
        mine: dict[str, pd.DataFrame] = {}
        for group in self.groups():
            views = self._views(group)
            read = getattr(views[0], "predict_file_many", None)
            if read is not None:
                mine.update(zip(group, read(views, path, **options), strict=True))
                continue
            for name, view in zip(group, views, strict=True):
                one = getattr(view, "predict_file", None)
                if one is None:
                    raise ConfigError(f"{name}: a {self.task} model predicts from data, not files")
                mine[name] = one(path, **options)
        return self._merge([mine[n] for n in self.used])

    def _views(self, group: list[str]) -> list[Predictor]:
        return [self.members[n] for n in group]

    def _merge(self, frames: list[pd.DataFrame]) -> pd.DataFrame:
        combination = self.saved.rows.get(str(self.row))
        return frames[0] if combination is None else self.merge(combination, frames)


def refuse_ensemble(predictor: Predictor) -> None:
    """``evaluate``: an ensemble of runs was scored when it was made."""
    if isinstance(predictor, RunsPredictor):
        assert predictor.run is not None
        raise scored_when_made(predictor.run)
