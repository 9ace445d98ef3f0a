"""``ensemble.json``: what an ensemble of runs (``greentune ensemble``) is made of, read and
written without loading a model (serve's start-up checks read it before torch is imported).

The members (each a row of a finished run, found again by its folder relative to the
ensemble's, then by its absolute path; its test scores then) and each combination with its
exact weights (metrics.json rounds them for reading). ``greentune.tasks.ensemble_predictor``
loads the members and combines their predictions.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from greentune.errors import CheckpointError, ConfigError, GreentuneError
from greentune.io import write_json
from greentune.rundir import ORIGINAL, RunDir

ENSEMBLE_FILE = "ensemble.json"
FORMAT = 1
WEIGHTED = ("weighted", "selected")
"""Kinds whose weights were fitted on validation (forecasts per step, classifiers per member)."""
SCORES_RTOL = 1e-6
"""A member whose test scores moved further than this since was made again (not re-scored in
its last float bits): the ensemble's weights no longer fit it."""


@dataclass(frozen=True)
class MemberRef:
    """One member as the ensemble recorded it."""

    name: str
    """Its row in the ensemble's table: ``<run folder>/<row>``."""
    relative: str
    """The member run's folder relative to the ensemble's folder (both resolved)."""
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
        fmt = raw.get("format") if isinstance(raw, dict) else None
    except ValueError as exc:
        raise _damaged(path, f"not JSON: {exc}") from None
    if fmt != FORMAT:
        raise CheckpointError(
            f"{path}: format {fmt!r}, this greentune reads {FORMAT}; update greentune or make "
            "the ensemble again with greentune ensemble"
        )
    try:
        members = [
            MemberRef(
                str(m["name"]),
                str(m["run"]),
                str(m["run_absolute"]),
                str(m["row"]),
                {str(k): None if v is None else float(v) for k, v in m["test_scores"].items()},
            )
            for m in raw["members"]
        ]
        rows = {
            str(name): Combination(
                str(c["kind"]), None if "weights" not in c else np.asarray(c["weights"], float)
            )
            for name, c in raw["rows"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _damaged(path, f"{type(exc).__name__}: {exc}") from None
    if len(members) < 2 or not rows:
        raise _damaged(path, f"{len(members)} members and {len(rows)} combinations")
    for name, c in rows.items():
        w = c.weights
        if (c.kind in WEIGHTED) != (w is not None):
            raise _damaged(path, f"{name} ({c.kind}) has {'no ' if w is None else ''}weights")
        if w is not None and (w.ndim not in (1, 2) or w.shape[-1] != len(members)):
            raise _damaged(
                path, f"{name}'s weights have shape {w.shape}, not (..., {len(members)})"
            )
    return SavedEnsemble(members, rows)


def _damaged(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is damaged ({why}); make the ensemble again with greentune ensemble"
    )


def member_run(ensemble: RunDir, ref: MemberRef) -> RunDir:
    """The member's run: beside the ensemble as it was left, else at its recorded absolute
    path (the first of the two that is the same run); refused when neither is."""
    beside = Path(os.path.normpath(ensemble.path.resolve() / ref.relative))
    refusals = []
    for path in dict.fromkeys([beside, Path(ref.absolute)]):
        if not path.is_dir():
            continue
        try:
            run = RunDir.open(path)
            now = run.metrics.test.get(ref.row)
        except GreentuneError as exc:
            refusals.append(f"{path}: {exc}")
            continue
        if now is not None and _same(now.scores, ref.scores):
            return run
        refusals.append(
            f"{path} changed since the ensemble was made (its {ref.row} test scores differ), so "
            "the ensemble's weights no longer fit it"
        )
    if not refusals:
        raise CheckpointError(
            f"{ensemble.path}: member {ref.name} is gone (looked in {beside} and "
            f"{ref.absolute}); put its run back, or make the ensemble again from the runs you "
            "have"
        )
    raise CheckpointError(
        f"{ensemble.path}: member {ref.name}: {'; '.join(refusals)}. Make the ensemble again "
        "with greentune ensemble"
    )


def _same(now: Mapping[str, float | None], then: Mapping[str, float | None]) -> bool:
    def eq(a: float | None, b: float | None) -> bool:
        if a is None or b is None:
            return a is b
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=SCORES_RTOL)

    return all(eq(now.get(k), v) for k, v in then.items())


def resolve_row(run: RunDir, saved: SavedEnsemble, row: str | None) -> str:
    """The row ``row`` names (None or ``model``: the ensemble's model row, its first kind;
    ``recommended``: its greenest); an unknown one lists the valid ones."""
    metrics = run.metrics
    name: str | None = metrics.model if row in (None, "model") else row
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


def scored_when_made(run: RunDir) -> CheckpointError:
    """What ``evaluate`` says of an ensemble of runs."""
    return CheckpointError(
        f"{run.path} is an ensemble of runs (greentune ensemble): it was scored when it was made "
        "and has no model of its own to score again; make it again with greentune ensemble to "
        "score its members as they are now"
    )


def refuse_variant(run: RunDir, variant: str | None) -> None:
    """An ensemble of runs has no compressed variants: its members may."""
    if variant is not None and variant not in ORIGINAL:
        raise ConfigError(
            f"variant {variant!r}: {run.path} is an ensemble of runs, which is not compressed "
            "itself; compress its members, then make an ensemble of the variants' runs"
        )


def check_members(run: RunDir, row: str | None) -> None:
    """What loading the ensemble would refuse (the file, a member gone, changed or unfinished,
    the row; an ensemble member's own members too), without loading a model."""
    saved = load_ensemble(run)
    for ref in saved.members:
        member = member_run(run, ref)
        member.check_finished("serve it")
        if is_ensemble_of_runs(member):
            check_members(member, ref.row)
        elif not member.model_dir.is_dir():
            raise CheckpointError(
                f"{run.path}: member {ref.name} has no model/ at {member.model_dir}; the run did "
                "not save its model"
            )
    resolve_row(run, saved, row)
