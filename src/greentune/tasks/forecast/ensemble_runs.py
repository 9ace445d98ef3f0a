"""``greentune ensemble``: one forecaster made of models from several finished runs.

A member is a row of a forecasting run (its network by default, or ``RUN:ROW`` for any row:
``lightgbm``, ``linear``, an ensemble of that run). The members must have forecast the same data
with the same windows; their saved forecasts are combined, nothing is retrained:

- the weights (per horizon step, convex, NNLS) are fitted on the members' validation forecasts
  (``validation.parquet``), never on test; the weighted ensemble's validation score is
  cross-fitted (each half with the other half's weights), as in a run;
- every row is scored on the test windows and on validation, and the recommended model is the
  greenest within the quality target, chosen on validation, as ``run`` does;
- the result is a run directory (config.yaml of the first member, metrics.json,
  predictions.parquet, validation.parquet, its own ledger for the combination). An ensemble's
  energy is its members' bills (read from their runs) plus the combination, metered here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from greentune.config import RunConfig, parse_target, replace
from greentune.data.windows import ForecastData, prepare_forecast_data
from greentune.energy.base import kind_of
from greentune.energy.ledger import summarise
from greentune.energy.session import metered
from greentune.errors import ConfigError, DataError
from greentune.evaluate.ensemble import KINDS, combine, fit_weights, member_windows
from greentune.evaluate.green import bill_windows, greenest
from greentune.results import EnergyBill, EnergySummary, Forecast, ModelResult, RunMetrics
from greentune.rundir import RunDir
from greentune.tasks.forecast.ensemble import cross_fitted
from greentune.tasks.forecast.predict import evaluate_forecast, prediction_rows, season_steps

Log = Callable[[str], None]
DEFAULT_KINDS = ("weighted", "mean", "median")


@dataclass
class Member:
    run: RunDir
    row: str
    metrics: RunMetrics

    @property
    def name(self) -> str:
        return f"{self.run.name}/{self.row}"


def open_member(spec: str) -> Member:
    """``RUN`` (its network's row) or ``RUN:ROW``; refused unless a finished forecasting run
    that has the row and its validation forecasts."""
    path, row = spec, None
    if not Path(spec).is_dir() and ":" in spec:
        path, row = spec.rsplit(":", 1)
    run = RunDir.open(path)
    run.check_finished("ensemble it")
    metrics = run.metrics
    if metrics.task != "forecast":
        raise ConfigError(f"{path}: a {metrics.task} run; ensemble combines forecasting runs")
    if metrics.compression is not None or metrics.federated is not None:
        raise ConfigError(
            f"{path}: a compressed variant or federated run; give its parent run directory"
        )
    row = row or metrics.model
    if row not in metrics.test:
        raise ConfigError(f"{path}: no row {row!r}; its rows: {', '.join(metrics.test)}")
    run.validation_predictions  # noqa: B018  (refused now, before anything is written)
    return Member(run, row, metrics)


def ensemble_runs(
    specs: list[str],
    out: str | Path,
    kinds: tuple[str, ...] = DEFAULT_KINDS,
    target: str | None = None,
    log: Log = print,
) -> RunDir:
    """Combine the members ``specs`` into the run directory ``out``; see the module doc."""
    members = [open_member(s) for s in specs]
    _check_members(members, kinds)
    first = members[0].run.config
    out = Path(out)
    cfg = replace(
        first,
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
            metrics = _ensemble(run, cfg, members, log)
        except BaseException as exc:
            run.set_status("failed", task=cfg.task, error=str(exc)[:500])
            raise
        run.write_metrics(metrics)
        run.set_status("complete", members=[str(m.run.path) for m in members])
    return run


def _check_members(members: list[Member], kinds: tuple[str, ...]) -> None:
    if len(members) < 2:
        raise ConfigError("an ensemble needs at least two members (RUN or RUN:ROW each)")
    names = [m.name for m in members]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"member {', '.join(twice)} given twice")
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ConfigError(
            f"--kinds: {', '.join(bad) or 'none given'}; valid choices: {', '.join(KINDS)}"
        )
    data0 = dataclasses.asdict(members[0].run.config.data)
    for m in members[1:]:
        data = dataclasses.asdict(m.run.config.data)
        differ = [k for k in data0 if k != "chosen" and data0[k] != data.get(k)]
        if differ:
            k = differ[0]
            raise ConfigError(
                f"{m.run.path} forecast other data than {members[0].run.path}: data.{k} is "
                f"{data.get(k)!r} there and {data0[k]!r} here; members must share the data, "
                "the windows and the splits"
            )


def _ensemble(run: RunDir, cfg: RunConfig, members: list[Member], log: Log) -> RunMetrics:
    with metered(run.path, cfg.energy, "ensemble", log) as meter:
        with meter.window("data"):
            data = prepare_forecast_data(cfg.data)
        season = season_steps(data, cfg.eval.season_length)
        with meter.window("ensemble"):
            test = {m.name: _forecast(m, data, "test") for m in members}
            val = {m.name: _forecast(m, data, "val") for m in members}
            y_val = data.target_values()[data.val.origins[:, None] + np.arange(data.horizon)]
            weights = fit_weights(val, y_val)
            rows = {f"ensemble-{k}": combine(k, test, weights) for k in cfg.eval.ensembles}
            val_rows = {f"ensemble-{k}": cross_fitted(k, val, y_val) for k in cfg.eval.ensembles}
    metrics = RunMetrics(
        task="forecast",
        model=f"ensemble-{cfg.eval.ensembles[0]}",
        test={},
        data={"source": str(cfg.data.path), "members": [str(m.run.path) for m in members]},
    )
    for m in members:
        own = m.metrics.test[m.row]
        metrics.test[m.name] = ModelResult(
            evaluate_forecast(data, data.test.origins, test[m.name], season),
            fit_s=own.fit_s,
            predict_s=own.predict_s,
            predictions=own.predictions,
            bill=own.bill,
        )
    for name, fc in rows.items():
        metrics.test[name] = ModelResult(
            evaluate_forecast(data, data.test.origins, fc, season),
            predictions=len(data.test.origins),
        )
    all_val = {**val, **val_rows}
    metrics.validation = {
        n: evaluate_forecast(data, data.val.origins, f, season) for n, f in all_val.items()
    }
    names = [m.name for m in members]
    metrics.ensembles = {
        n: {"kind": n.removeprefix("ensemble-"), "members": names}
        | ({"weights_by_step": np.round(weights, 4).tolist()} if n == "ensemble-weighted" else {})
        for n in rows
    }
    if meter.enabled:
        _bill(run, cfg, members, metrics)
    frames = [prediction_rows(data, data.test.origins, f, n) for n, f in {**test, **rows}.items()]
    run.write_predictions(pd.concat(frames, ignore_index=True))
    val_frames = [prediction_rows(data, data.val.origins, f, n) for n, f in all_val.items()]
    run.write_validation_predictions(pd.concat(val_frames, ignore_index=True))
    log(
        f"ensemble of {len(members)} members ({', '.join(names)}): "
        + ", ".join(f"{n} MAPE {metrics.test[n].score('mape'):.3f}" for n in rows)
    )
    return metrics


def _forecast(m: Member, data: ForecastData, split: str) -> Forecast:
    """The member's saved forecasts of ``split`` as (N, H, T) arrays, checked against the
    windows of the data: the same origins, steps and targets, the same actual values."""
    frame = m.run.predictions if split == "test" else m.run.validation_predictions
    frame = frame[frame.model == m.row]
    origins = data.test.origins if split == "test" else data.val.origins
    n, h, t = len(origins), data.horizon, data.n_targets
    if len(frame) != n * h * t:
        raise DataError(
            f"{m.run.path}: {len(frame)} {split} forecasts of {m.row}, not the {n} x {h} x {t} "
            "windows of the first member's data: the runs did not forecast the same windows"
        )
    order = {c: i for i, c in enumerate(data.target_cols)}
    frame = frame.assign(_t=frame.target.map(order)).sort_values(["origin", "step", "_t"])
    times = pd.DatetimeIndex(frame.origin.to_numpy()[:: h * t])
    expected = data.frame.index[origins]
    if frame._t.isna().any() or len(times) != n or not (times == expected).all():
        raise DataError(
            f"{m.run.path}: the {split} forecasts of {m.row} are for other origins or targets "
            f"than the data's ({expected[0]} ... {expected[-1]}, {', '.join(data.target_cols)})"
        )
    y = data.target_values()[origins[:, None] + np.arange(h)]
    if not np.allclose(frame.y_true.to_numpy().reshape(n, h, t), y, equal_nan=True):
        raise DataError(
            f"{m.run.path}: the actual values in its {split} forecasts differ from "
            f"{data.report.origin}: the data changed since the run; run it again"
        )
    point = frame.y_pred.to_numpy(dtype=float).reshape(n, h, t)
    levels = [c for c in frame.columns if c.startswith("q") and c[1:].replace(".", "").isdigit()]
    quantiles = {
        float(c[1:]): frame[c].to_numpy(dtype=float).reshape(n, h, t)
        for c in levels
        if frame[c].notna().all()
    }
    return Forecast(point, quantiles or None)


def _bill(run: RunDir, cfg: RunConfig, members: list[Member], metrics: RunMetrics) -> None:
    """Each ensemble row costs its members plus this command's windows (loading the data,
    combining: billed as fit); members keep the bills of their runs. Members from one run are
    priced together from that run's ledger, each window once (its network and its `linear`
    share the ridge fit; a hybrid and its `lightgbm` the LightGBM fit), as a run prices its own
    ensembles."""
    from greentune.tasks import TASKS

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
        **greenest(metrics, parse_target(cfg.energy.target), TASKS.get("forecast").quality),
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
