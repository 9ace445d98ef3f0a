"""An ensemble of runs (``greentune ensemble``) as a model you can load, predict with and serve.

``greentune ensemble`` writes ``ensemble.json`` beside its metrics: the members (each a row of a
finished run, found again by a path relative to the ensemble's folder, then by its absolute
path) and each combination with its exact weights (metrics.json rounds them for reading).
``RunsPredictor`` loads each member once through ``Predictor.from_run`` (a network, or a kept
row of a forecasting run) and combines their predictions as the ensemble combined their saved
ones, so it reproduces the ensemble's ``predictions.parquet``. How predictions combine is the
task's (``Merge``): forecasts per horizon step, class probabilities per class.

A member whose run changed since the ensemble was made (its test scores differ from those
recorded) is refused: the weights were fitted on the old model's forecasts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from greentune.errors import CheckpointError, ConfigError
from greentune.io import write_json
from greentune.rundir import RunDir
from greentune.tasks.base import Predictor, Prepared

ENSEMBLE_FILE = "ensemble.json"
FORMAT = 1


@dataclass(frozen=True)
class MemberRef:
    """One member as the ensemble recorded it."""

    name: str
    """Its row in the ensemble's table: ``<run folder>/<row>``."""
    relative: str
    """The member run's folder relative to the ensemble's folder."""
    absolute: str
    row: str
    """The row of the member run: its network's name or a kept row."""
    scores: dict[str, float | None]
    """The member's test scores when the ensemble was made (a changed run is refused)."""


@dataclass(frozen=True)
class Combination:
    kind: str
    weights: np.ndarray | None = None
    """Forecasts: (H, M) per horizon step; classifiers: (M,). None for mean and median."""


@dataclass(frozen=True)
class SavedEnsemble:
    members: list[MemberRef]
    rows: dict[str, Combination]
    """``ensemble-<kind>`` -> how it combines all members, in ``members``' order."""


def save_ensemble(
    run: RunDir,
    members: list[tuple[str, RunDir, str, Mapping[str, float | None]]],
    rows: Mapping[str, Combination],
) -> None:
    """Write ``ensemble.json``; ``members``: (name, run, row, its test scores) each."""
    here = run.path.resolve()
    write_json(
        run.path / ENSEMBLE_FILE,
        {
            "format": FORMAT,
            "members": [
                {
                    "name": name,
                    "run": os.path.relpath(member.path.resolve(), here),
                    "run_absolute": str(member.path.resolve()),
                    "row": row,
                    "test_scores": dict(scores),
                }
                for name, member, row, scores in members
            ],
            "rows": {
                name: {"kind": c.kind}
                | ({} if c.weights is None else {"weights": np.asarray(c.weights).tolist()})
                for name, c in rows.items()
            },
        },
    )


def is_ensemble_of_runs(run: RunDir) -> bool:
    """Made by ``greentune ensemble`` (it has no ``model/`` of its own)."""
    return (run.path / ENSEMBLE_FILE).is_file() or bool(run.info.extra.get("members"))


def load_ensemble(run: RunDir) -> SavedEnsemble:
    """``ensemble.json``, checked; an ensemble made before it was written is told to make it
    again (nothing is retrained)."""
    path = run.path / ENSEMBLE_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{run.path} is an ensemble of runs made before greentune kept its members and "
            f"weights ({ENSEMBLE_FILE}); make it again with greentune ensemble (seconds: nothing "
            "is retrained) to load or serve it"
        )
    try:
        raw = json.loads(path.read_text())
        members = [
            MemberRef(
                str(m["name"]),
                str(m["run"]),
                str(m["run_absolute"]),
                str(m["row"]),
                dict(m["test_scores"]),
            )
            for m in raw["members"]
        ]
        rows = {
            str(name): Combination(
                str(c["kind"]), None if "weights" not in c else np.asarray(c["weights"], float)
            )
            for name, c in raw["rows"].items()
        }
        fmt = raw["format"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{path} is damaged ({type(exc).__name__}: {exc}); make the ensemble again with "
            "greentune ensemble"
        ) from None
    if fmt != FORMAT:
        raise CheckpointError(
            f"{path}: format {fmt}, this greentune reads {FORMAT}; update greentune or make the "
            "ensemble again"
        )
    for name, c in rows.items():
        if c.weights is not None and c.weights.shape[-1] != len(members):
            raise CheckpointError(
                f"{path}: {name} has weights for {c.weights.shape[-1]} members, not the "
                f"{len(members)} listed; make the ensemble again with greentune ensemble"
            )
    return SavedEnsemble(members, rows)


def member_run(ensemble: RunDir, ref: MemberRef) -> RunDir:
    """The member's run, where the ensemble left it or at its recorded absolute path; refused
    when it is gone or changed since the ensemble was made."""
    beside = Path(os.path.normpath(ensemble.path / ref.relative))
    for path in (beside, Path(ref.absolute)):
        if path.is_dir():
            run = RunDir.open(path)
            break
    else:
        raise CheckpointError(
            f"{ensemble.path}: member {ref.name} is gone (looked in {beside} and "
            f"{ref.absolute}); put its run back, or make the ensemble again from the runs "
            "you have"
        )
    now = run.metrics.test.get(ref.row)
    if now is None or not _same(now.scores, ref.scores):
        raise CheckpointError(
            f"{ensemble.path}: member {ref.name} ({run.path}) changed since the ensemble was made "
            "(its test scores differ), so the ensemble's weights no longer fit it; make the "
            "ensemble again with greentune ensemble"
        )
    return run


def _same(now: Mapping[str, float | None], then: Mapping[str, float | None]) -> bool:
    def eq(a: float | None, b: float | None) -> bool:
        if a is None or b is None:
            return a is b
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12)

    return all(eq(now.get(k), v) for k, v in then.items())


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
    ) -> None:
        self.run, self.saved, self.members, self.merge = run, saved, members, merge
        self.task = next(iter(members.values())).task
        self.row_spec = row
        self.row = _resolve(run, saved, row)
        self.cfg = run.config

    @classmethod
    def load(cls, run: RunDir, merge: Merge) -> RunsPredictor:
        saved = load_ensemble(run)
        members = {}
        for ref in saved.members:
            member = member_run(run, ref)
            network = ref.row == member.metrics.model  # a classifier keeps no other row
            members[ref.name] = Predictor.from_run(member.path, row=None if network else ref.row)
        return cls(run, saved, members, merge)

    def with_row(self, row: str) -> RunsPredictor:
        assert self.run is not None
        return RunsPredictor(self.run, self.saved, self.members, self.merge, row)

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

    def prepare(self, frame: Any, **options: Any) -> Prepared:
        parts = [self.members[n].prepare(frame, **options) for n in self.used]
        return Prepared(self, max(p.size for p in parts), parts)

    def predict_prepared(self, items: list[Prepared]) -> list[pd.DataFrame]:
        per_member = [
            self.members[n].predict_prepared([item.payload[i] for item in items])
            for i, n in enumerate(self.used)
        ]
        return [self._merge([frames[k] for frames in per_member]) for k in range(len(items))]

    def predict_file(self, path: str | Path, **options: Any) -> pd.DataFrame:
        """``predict`` on a data file, each member reading it as its run reads files."""
        frames = []
        for name in self.used:
            read = getattr(self.members[name], "predict_file", None)
            if read is None:
                raise ConfigError(f"{name}: a {self.task} model predicts from data, not files")
            frames.append(read(path, **options))
        return self._merge(frames)

    def _merge(self, frames: list[pd.DataFrame]) -> pd.DataFrame:
        combination = self.saved.rows.get(str(self.row))
        return frames[0] if combination is None else self.merge(combination, frames)


def check_members(run: RunDir, row: str | None) -> None:
    """What ``RunsPredictor.load`` would refuse (the file, a member gone or changed, the row),
    without loading a model."""
    saved = load_ensemble(run)
    for ref in saved.members:
        member_run(run, ref)
    _resolve(run, saved, row)


def refuse_ensemble(predictor: Predictor, what: str) -> None:
    """An ensemble of runs has no network of its own to ``what`` (score again, compress)."""
    if isinstance(predictor, RunsPredictor):
        assert predictor.run is not None
        raise CheckpointError(
            f"{predictor.run.path} is an ensemble of runs (greentune ensemble), scored when it "
            f"was made, with no model of its own to {what}: make the ensemble again, or {what} "
            "its members"
        )


def _resolve(run: RunDir, saved: SavedEnsemble, row: str | None) -> str:
    metrics = run.metrics
    if row is None:
        return metrics.model
    name: str | None = row
    if row == "recommended":
        name = metrics.energy.greenest if metrics.energy else None
        if name is None:
            raise CheckpointError(
                f"{run.path} recommends no row (metrics.json has no greenest model); name one"
            )
    names = [*saved.rows, *(m.name for m in saved.members)]
    if name not in names:
        raise ConfigError(
            f"{run.path}: no row {name!r} to predict with; it has {', '.join(names)} (an "
            "ensemble, or one member alone)"
        )
    return str(name)
