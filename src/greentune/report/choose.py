"""Among the rows of finished runs (each run's model, baselines and ensembles): the Pareto front
of quality against energy, and the greenest row within a target of the best.

The choice is the one ``greentune run`` makes inside a run (``evaluate.green.greenest``), made
over several runs: judged on validation scores when every row has one, so that the test split
scores the chosen row once; on test otherwise, and then it says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greentune.errors import ConfigError
from greentune.evaluate.green import greenest
from greentune.report.collect import RunView
from greentune.results import EnergyBill, ModelResult, Quality, RunMetrics


@dataclass(frozen=True)
class Candidate:
    """One row of one run, as the choice sees it."""

    label: str
    """``run/row`` over several runs, ``row`` within one."""
    run: str
    row: str
    test: float
    val: float | None
    energy_wh: float | None
    emissions_g: float | None
    fine_tuned: bool
    energy_kind: str | None = None
    """measured, model, estimated or mixed (the bill's)."""


@dataclass(frozen=True)
class Choice:
    """Every candidate, the front, and the verdict (empty when no row has an energy bill)."""

    quality: Quality
    candidates: list[Candidate]
    front: list[str]
    """Labels on the Pareto front of (metric, energy), cheapest first."""
    verdict: dict[str, Any]
    """``evaluate.green.greenest``'s keys: target, best, greenest, chosen_on, ..."""

    @property
    def chosen_on(self) -> str:
        return str(self.verdict.get("chosen_on", "test"))

    def judged(self, c: Candidate) -> float:
        """The score the choice used for ``c``: validation when chosen on it (NaN for a row
        without one, which cannot be chosen), else test."""
        if self.chosen_on == "validation":
            return float(c.val) if c.val is not None else math.nan
        return c.test

    def ordered(self) -> list[Candidate]:
        """Best first by the judged score; rows without that score last."""
        sign = -1.0 if self.quality.higher_is_better else 1.0
        on_val = self.chosen_on == "validation"

        def key(c: Candidate) -> tuple[bool, float, str]:
            value = self.judged(c)
            missing = (on_val and c.val is None) or not math.isfinite(value)
            return missing, sign * value if not missing else 0.0, c.label

        return sorted(self.candidates, key=key)

    def by_label(self) -> dict[str, Candidate]:
        return {c.label: c for c in self.candidates}


def candidates(views: list[RunView]) -> list[Candidate]:
    """Every row of every run, labelled ``run/row`` when there are several runs."""
    several = len(views) > 1
    listed = {str(v.run.path.resolve()) for v in views}
    out: list[Candidate] = []
    for view in views:
        m, key = view.metrics, view.quality.metric
        val = m.validation or {}
        # A compressed variant carries its parent's baselines: listed beside its parent, only
        # its own model is new.
        copied = view.parent is not None and str(Path(view.parent).resolve()) in listed
        for row, result in m.test.items():
            if copied and row != m.model:
                continue
            bill = result.bill
            v = (val.get(row) or {}).get(key)
            out.append(
                Candidate(
                    label=f"{view.name}/{row}" if several else row,
                    run=view.name,
                    row=row,
                    test=result.score(key),
                    val=float(v) if v is not None and _finite(v) else None,
                    energy_wh=bill.energy_wh if bill else None,
                    emissions_g=bill.emissions_g if bill else None,
                    fine_tuned=row == m.model,
                    energy_kind=bill.energy_kind if bill else None,
                )
            )
    return out


def same_windows(views: list[RunView]) -> str | None:
    """None when every run was scored on the same task and test split, else what differs."""
    first = views[0]
    for view in views[1:]:
        if view.metrics.task != first.metrics.task:
            return (
                f"{view.run.path} is a {view.metrics.task} run, {first.run.path} a "
                f"{first.metrics.task} run"
            )
        if view.quality.metric != first.quality.metric:
            return (
                f"{view.run.path} ranks by {view.quality.metric}, {first.run.path} by "
                f"{first.quality.metric} (eval.metric): rank both by one"
            )
        a, b = _split_key(first), _split_key(view)
        for key in a:
            if a[key] != b[key]:
                return (
                    f"{view.run.path} was tested on other data than {first.run.path} "
                    f"({key}: {b[key]} against {a[key]})"
                )
    return None


def _split_key(view: RunView) -> dict[str, Any]:
    """What two runs scored on the same test split share: the series' test span and windows
    (forecasts), the classes and the number of test predictions (every task)."""
    m = view.metrics
    data = m.data or {}
    return {
        "test_start": data.get("test_start"),
        "end": data.get("end"),
        "step": data.get("step"),
        "test windows": (data.get("windows") or {}).get("test"),
        "horizon": view.config.data.horizon if data else None,
        "labels": m.labels,
        "test predictions": m.result.predictions,
    }


def choose(views: list[RunView], target: float) -> Choice:
    """The front and the greenest row within ``target`` (relative) of the best, over runs
    scored on the same test split (else a ``ConfigError`` naming the run that differs)."""
    if not views:
        raise ConfigError("name at least one run directory")
    differs = same_windows(views)
    if differs is not None:
        raise ConfigError(f"runs can only be compared on the same test split: {differs}")
    quality = views[0].quality
    rows = candidates(views)
    private = {
        f"{v.name}/{r}" if len(views) > 1 else r
        for v in views
        for r in (v.metrics.privacy or {}).get("non_private_reference") or []
    }
    pooled = RunMetrics(
        task=views[0].metrics.task,
        model=rows[0].label,
        test={c.label: _result(c, quality.metric) for c in rows},
        validation={c.label: {quality.metric: c.val} for c in rows if c.val is not None},
        privacy={"non_private_reference": sorted(private)} if private else None,
    )
    verdict = greenest(pooled, target, quality)
    choice = Choice(quality, rows, [], verdict)
    return Choice(quality, rows, pareto_front(rows, choice.judged, quality), verdict)


def _result(c: Candidate, metric: str) -> ModelResult:
    bill = None
    if c.energy_wh is not None:
        bill = EnergyBill(
            fit_wh=0.0,
            fit_g=None,
            predict_wh=0.0,
            predict_g=None,
            energy_wh=c.energy_wh,
            emissions_g=c.emissions_g,
            energy_kind=c.energy_kind,
        )
    return ModelResult(scores={metric: c.test}, bill=bill)


def pareto_front(rows: list[Candidate], score: Any, quality: Quality) -> list[str]:
    """Labels of the rows no other row beats on both ``score(row)`` and energy, cheapest
    first (rows without a bill or a finite score are left out)."""
    sign = -1.0 if quality.higher_is_better else 1.0
    usable = [c for c in rows if c.energy_wh is not None and _finite(score(c))]
    usable.sort(key=lambda c: (c.energy_wh, sign * score(c)))
    front: list[str] = []
    best = math.inf
    for c in usable:
        value = sign * score(c)
        if value < best:
            front.append(c.label)
            best = value
    return front


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
