"""What every task's ``greentune ensemble`` shares: its members (rows of finished runs), the
checks they pass before anything is written, the ensemble's run directory, and its energy bill.

A task's own module combines the members' predictions (``tasks/forecast/ensemble_runs.py``:
saved forecasts; ``tasks/classify/ensemble_runs.py``: class probabilities).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from greentune.config import RunConfig, parse_target, replace
from greentune.energy.base import kind_of
from greentune.energy.ledger import summarise
from greentune.errors import CheckpointError, ConfigError
from greentune.evaluate.ensemble import member_windows
from greentune.evaluate.green import bill_windows, greenest
from greentune.results import EnergyBill, EnergySummary, Quality, RunMetrics
from greentune.rundir import RunDir

Log = Callable[[str], None]


@dataclass
class Member:
    run: RunDir
    row: str
    metrics: RunMetrics

    @property
    def name(self) -> str:
        return f"{self.run.name}/{self.row}"


def split_spec(spec: str) -> tuple[str, str | None]:
    """``RUN`` or ``RUN:ROW`` -> (run path, row or None); a folder whose name holds a colon is
    a run path."""
    if not Path(spec).is_dir() and ":" in spec:
        path, row = spec.rsplit(":", 1)
        return path, row
    return spec, None


def members_task(specs: list[str]) -> str:
    """The task of an ensemble's first member, which picks the task's ensemble; each task's
    ensemble refuses members of another task."""
    if not specs:
        raise ConfigError("an ensemble needs at least two members (RUN or RUN:ROW each)")
    return RunDir.open(split_spec(specs[0])[0]).config.task


def open_member(spec: str, task: str) -> Member:
    """A finished run of ``task`` with the row ``spec`` names (its network by default); a
    compressed variant, a federated run or a missing row is refused with what to give."""
    path, row = split_spec(spec)
    run = RunDir.open(path)
    run.check_finished("ensemble it")
    metrics = run.metrics
    if metrics.task != task:
        raise ConfigError(
            f"{path}: a {metrics.task} run; this ensemble combines {task} runs: give runs of "
            "one task"
        )
    if metrics.compression is not None or metrics.federated is not None:
        raise ConfigError(
            f"{path}: a compressed variant or federated run; give its parent run directory"
        )
    row = row or metrics.model
    if row not in metrics.test:
        raise ConfigError(f"{path}: no row {row!r}; its rows: {', '.join(metrics.test)}")
    return Member(run, row, metrics)


def check_members(
    members: list[Member],
    kinds: tuple[str, ...],
    valid: tuple[str, ...],
    quality_of: Callable[[RunConfig], Quality],
) -> None:
    """At least two members, none twice, only the task's kinds of combination, and one score
    to rank by (``quality_of`` each member's config: the task's ``eval.metric``)."""
    if len(members) < 2:
        raise ConfigError("an ensemble needs at least two members (RUN or RUN:ROW each)")
    names = [m.name for m in members]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"member {', '.join(twice)} given twice")
    bad = [k for k in kinds if k not in valid]
    if bad or not kinds:
        raise ConfigError(
            f"--kinds: {', '.join(bad) or 'none given'}; valid choices: {', '.join(valid)}"
        )
    ranks = {m.run.path: quality_of(m.run.config).metric for m in members}
    if len(set(ranks.values())) > 1:  # the ensemble ranks its rows by its members' score
        listed = ", ".join(f"{path} by {metric}" for path, metric in ranks.items())
        raise ConfigError(f"the members rank by different scores (eval.metric): {listed}")


def ensemble_run(
    members: list[Member],
    out: str | Path,
    kinds: tuple[str, ...],
    target: str | None,
    combine: Callable[[RunDir, RunConfig], RunMetrics],
) -> RunDir:
    """The ensemble's run directory ``out`` (config.yaml: the first member's, with the kinds in
    ``eval.ensembles``), filled by ``combine``; marked failed if it raises."""
    out = Path(out)
    cfg = replace(
        members[0].run.config,
        name=out.name,
        output_dir=str(out.parent),
        eval={"ensembles": tuple(kinds), "ensemble_members": ()},
        **({"energy": {"target": target}} if target else {}),
    )
    parse_target(cfg.energy.target)  # a bad --target fails before anything is written
    run = RunDir.create(cfg)
    with run.lock("ensemble"):
        run.start(cfg)
        try:
            metrics = combine(run, cfg)
        except BaseException as exc:
            run.set_status("failed", task=cfg.task, error=str(exc)[:500])
            raise
        run.write_metrics(metrics)
        run.set_status("complete", members=[str(m.run.path) for m in members])
    return run


def require_model_dir(run_path: Path, what: str = "compress") -> Path:
    """``run_path/model``; an ensemble of runs (which has none) names its members instead, which
    ``what`` (compress, ensemble) takes."""
    model_dir = run_path / "model"
    if not model_dir.is_dir():
        members = RunDir(run_path).info.extra.get("members")
        if members:
            raise CheckpointError(
                f"{run_path} is an ensemble of runs (greentune ensemble) with no model of its "
                f"own to {what} (Predictor.from_run, predict and serve load it through its "
                f"members); {what} its members: {', '.join(members)}"
            )
        raise CheckpointError(f"{run_path} has no model/; the run did not finish training")
    return model_dir


def bill_ensembles(
    run: RunDir, cfg: RunConfig, members: list[Member], metrics: RunMetrics, quality: Quality
) -> None:
    """Each ensemble row costs its members plus this command's windows (billed as fit: they
    make the ensemble); members keep the bills of their runs. Members from one run are priced
    together from that run's ledger, each window once (its network and its `linear` share the
    ridge fit; a hybrid and its `lightgbm` the LightGBM fit), as a run prices its own
    ensembles. Then the recommendation: the greenest row within the target."""
    own = summarise([r for r in run.ledger.rows if r["command"] == "ensemble" and r["depth"] == 0])
    own_wh, own_g = own["energy_j"] / 3600, own["emissions_g"]
    shared = _members_bill(members)
    for name in metrics.ensembles or {}:
        row = metrics.test[name]
        if shared is None:
            continue  # a member's run was not metered: the ensemble's cost is unknown
        n = max(row.predictions or 1, 1)
        fit_wh, fit_g = own_wh + shared.fit_wh, _sum([own_g, shared.fit_g])
        row.bill = EnergyBill(
            fit_wh,
            fit_g,
            shared.predict_wh,
            shared.predict_g,
            fit_wh + shared.predict_wh,
            _sum([fit_g, shared.predict_g]),
            1000 * shared.predict_wh / n,
            None if shared.predict_g is None else 1000 * shared.predict_g / n,
            energy_kind=kind_of([shared.energy_kind, *own["kinds"]]),
        )
    kinds = {k for m in members if m.metrics.energy for k in m.metrics.energy.kinds}
    metrics.energy = EnergySummary(
        kinds=sorted(kinds | set(own["kinds"])),
        carbon=run.ledger.sessions[-1].get("carbon") if run.ledger.sessions else None,
        run_wh=own_wh,
        run_g=own_g,
        by_phase_wh={"members": shared.energy_wh if shared else math.nan, "ensemble": own_wh},
        **greenest(metrics, parse_target(cfg.energy.target), quality),
    )


def _members_bill(members: list[Member]) -> EnergyBill | None:
    """The members' cost, each run's shared windows once; None when one is unknown."""
    groups: dict[Path, list[Member]] = {}
    for m in members:
        groups.setdefault(m.run.path, []).append(m)
    bills = []
    for group in groups.values():
        rows = [g.metrics.test[g.row] for g in group]
        if any(r.bill is None for r in rows):
            return None
        windows = [r.energy_windows for r in rows]
        if len(group) == 1 or any(not w for w in windows):
            bills += [r.bill for r in rows if r.bill is not None]
            continue
        merged = member_windows([w for w in windows if w], "")
        merged["fit"].pop("", None)
        bills.append(bill_windows(group[0].run.ledger, merged))
    return EnergyBill(
        sum(b.fit_wh for b in bills),
        _sum([b.fit_g for b in bills]),
        sum(b.predict_wh for b in bills),
        _sum([b.predict_g for b in bills]),
        sum(b.energy_wh for b in bills),
        _sum([b.emissions_g for b in bills]),
        energy_kind=kind_of(b.energy_kind for b in bills),
    )


def _sum(values: list[float | None]) -> float | None:
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return None
    return float(sum(v for v in values if v is not None))
