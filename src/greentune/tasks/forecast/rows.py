"""The rows of a forecasting run's table that forecast new data beside the network: the fitted
baselines (seasonal naives, ``linear``, ``linear_clock``, ``lightgbm`` and the LightGBM designs
a weighted ensemble weighs) and the ensembles over them. A run recommends the row that is
greenest within its target, often an ensemble; kept here, that row is what ``greentune predict
--row`` and ``greentune serve --row`` forecast with, not only the network.

    rows/rows.json      {"format": 1, "rows": {name: {...}}, "ensembles": {name: {...}}}
    rows/<i>-<k>.npz    a ridge's weight, x_mean, y_mean (``linear``; ``linear_clock`` has one
                        per clock minute)
    rows/<i>-<j>.txt    a LightGBM model of target j, in LightGBM's own text format

The fits are the run's own (on the training rows, tuned on validation), so a served baseline
forecasts a run's test windows exactly as its table scored them, and an ensemble with the network
to float32 precision. A baseline's quantiles are its point plus the residual quantiles per horizon
step the run calibrated (on validation for the ridges and LightGBM, on training rows for the
naives) at the test origins' clock times; an origin at another clock time gets the same offsets.
A DP run keeps only the rows fitted on no training data (the seasonal naives, without the
quantiles they calibrate on training rows) and no ensemble: the others would carry its data
unprotected.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from greentune.data.windows import ForecastData
from greentune.errors import CheckpointError, ConfigError, DataError, GreentuneError
from greentune.evaluate.baselines import (
    FITTED_ON_NOTHING,
    clock_point,
    ridge_point,
    seasonal_lags,
    seasonal_point,
    steps_per,
)
from greentune.evaluate.ensemble import combine
from greentune.evaluate.lgbm import (
    Booster,
    LgbmFit,
    design_fit,
    history_rows,
    kept_fit,
    lgbm_point,
)
from greentune.evaluate.ridge import LinearFit, clock_minutes, fit_linear, fit_linear_at
from greentune.io import staged_dir, write_json
from greentune.results import Forecast
from greentune.rundir import ORIGINAL, RunDir
from greentune.tasks.forecast.ensemble import LIGHTGBM, MODEL, EnsembleRow

ROWS_DIR = "rows"
ROWS_FILE = "rows.json"
FORMAT = 1
NAIVE_PERIODS = {"seasonal_naive_daily": "1D", "seasonal_naive_weekly": "7D"}
CLOCK = "linear_clock"


@dataclass
class SavedRow:
    """One fitted baseline: how it forecasts and its quantile offsets per step."""

    kind: str
    """naive, ridge, ridge_clock or lightgbm."""
    offsets: dict[float, np.ndarray] | None = None
    """(H, T) per quantile level, added to the point; None without quantiles."""
    period: int = 0
    """A seasonal naive's season in steps."""
    ridges: dict[int, LinearFit] = field(default_factory=dict)
    """A ridge's fit under -1; linear_clock's by minute of the day."""
    lgbm: list[LgbmFit] = field(default_factory=list)
    """LightGBM per target."""

    def history(self, step: pd.Timedelta, horizon: int) -> int:
        """Rows of history it reads before a forecast origin (0: the network's context)."""
        day = max(1, round(pd.Timedelta("1D") / step))
        if self.kind == "lightgbm":
            return max(history_rows(f, day, horizon) for f in self.lgbm)
        if self.kind == "naive":
            return int(seasonal_lags(horizon, self.period).max())
        return 0

    def check(self, data: ForecastData, origins: np.ndarray) -> None:
        """Refuse origins it cannot forecast, before any work (a served batch then fails only
        the request that asked for them)."""
        if self.kind == "ridge_clock":
            at = clock_minutes(data, origins)
            off = [int(m) for m in np.unique(at) if int(m) not in self.ridges]
            if off:
                kept = ", ".join(f"{k // 60:02d}:{k % 60:02d}" for k in sorted(self.ridges))
                m = off[0]
                raise DataError(
                    f"{data.report.origin}: linear_clock has a ridge for forecasts issued at "
                    f"{kept} only, not {m // 60:02d}:{m % 60:02d}; end the history just before "
                    "one of those times"
                )
        elif self.kind == "lightgbm":
            need = self.history(data.step, data.horizon)
            if len(origins) and origins.min() < need:
                raise DataError(
                    f"{data.report.origin}: LightGBM reads {need} rows before the forecast (its "
                    f"lags and weekly statistics): give at least that much history; there are "
                    f"{origins.min()}"
                )

    def forecast(self, data: ForecastData, origins: np.ndarray) -> Forecast:
        self.check(data, origins)
        if self.kind == "naive":
            point = seasonal_point(data, origins, self.period)
        elif self.kind == "ridge":
            point = ridge_point(data, self.ridges[-1], origins)
        elif self.kind == "ridge_clock":
            point = clock_point(data, self.ridges, origins)
        else:
            point = lgbm_point(data, self.lgbm, origins)
        q = {k: point + v[None] for k, v in self.offsets.items()} if self.offsets else None
        return Forecast(point, q)


@dataclass
class SavedEnsemble:
    kind: str
    members: list[str]
    weights: np.ndarray | None = None
    """(H, M) for a weighted ensemble."""


@dataclass
class RowSet:
    """A run's kept rows: what ``Predictor`` forecasts with besides the network."""

    rows: dict[str, SavedRow]
    ensembles: dict[str, SavedEnsemble]

    @property
    def names(self) -> list[str]:
        return [*self.rows, *self.ensembles]

    def history(self, name: str, step: pd.Timedelta, horizon: int) -> int:
        """Rows of history row ``name`` reads before a forecast beyond the network's context:
        LightGBM a week or more (``lgbm.history_rows``), a seasonal naive its longest lag."""
        if name in self.ensembles:
            members = self.ensembles[name].members
            return max((self.history(m, step, horizon) for m in members if m != MODEL), default=0)
        return self.rows[name].history(step, horizon)

    def check(self, name: str, data: ForecastData, origins: np.ndarray) -> None:
        """Row ``name`` (an ensemble: each member) can forecast ``origins``, or a DataError."""
        if name in self.ensembles:
            for m in self.ensembles[name].members:
                if m != MODEL:
                    self.check(m, data, origins)
        else:
            self.rows[name].check(data, origins)

    def needs_network(self, name: str) -> bool:
        return name in self.ensembles and MODEL in self.ensembles[name].members

    def forecast(
        self,
        name: str,
        data: ForecastData,
        origins: np.ndarray,
        network: Forecast | None,
        done: dict[str, Forecast] | None = None,
    ) -> Forecast:
        """Row ``name``'s forecast of ``origins``; ``network`` is the network's forecast of
        them (needed by an ensemble it is a member of). ``done``: the kept rows' forecasts of
        these same windows so far, reused and added to (several rows of one run served at once
        forecast each baseline once)."""
        done = {} if done is None else done
        if name in self.rows:
            if name not in done:
                done[name] = self.rows[name].forecast(data, origins)
            return done[name]
        ens = self.ensembles[name]
        if ens.weights is not None and len(ens.weights) != data.horizon:
            raise CheckpointError(
                f"{name}'s weights in {ROWS_DIR}/{ROWS_FILE} have {len(ens.weights)} horizon "
                f"steps, the run {data.horizon}; run the training again to rebuild them"
            )
        members = {}
        for m in ens.members:
            if m == MODEL:
                assert network is not None, "the caller forecasts with the network first"
                members[m] = network
            else:
                members[m] = self.forecast(m, data, origins, network, done)
        return combine(ens.kind, members, ens.weights)

    # ------------------------------------------------------------------ files

    def save(self, run_path: Path) -> None:
        """Write ``run_path/rows`` as a whole (a crash leaves the previous folder, or none)."""
        with staged_dir(run_path / ROWS_DIR) as tmp:
            rows = {}
            for i, (name, row) in enumerate(self.rows.items()):
                entry: dict[str, Any] = {"kind": row.kind}
                if row.offsets:
                    entry["offsets"] = {str(q): v.tolist() for q, v in row.offsets.items()}
                if row.kind == "naive":
                    entry["period"] = row.period
                for k, fit in row.ridges.items():
                    np.savez(
                        tmp / f"{i}-{k}.npz",
                        weight=fit.weight,
                        x_mean=fit.x_mean,
                        y_mean=fit.y_mean,
                    )
                if row.ridges:
                    entry["ridges"] = {
                        str(k): {"file": f"{i}-{k}.npz", "alpha": f.alpha, "level": f.level}
                        for k, f in row.ridges.items()
                    }
                for j, lfit in enumerate(row.lgbm):
                    (tmp / f"{i}-{j}.txt").write_text(lfit.predict.to_string())
                if row.lgbm:
                    entry["lightgbm"] = [
                        {"file": f"{i}-{j}.txt", "form": f.form, "size": f.size}
                        | {"val_mae": f.val_mae}
                        for j, f in enumerate(row.lgbm)
                    ]
                rows[name] = entry
            ensembles = {
                name: {
                    "kind": e.kind,
                    "members": e.members,
                    **({"weights": e.weights.tolist()} if e.weights is not None else {}),
                }
                for name, e in self.ensembles.items()
            }
            write_json(tmp / ROWS_FILE, {"format": FORMAT, "rows": rows, "ensembles": ensembles})

    @classmethod
    def load(cls, run_path: Path) -> RowSet | None:
        """The rows a run keeps, or None for a run that keeps none (made before rows/ existed)."""
        folder = run_path / ROWS_DIR
        if not (folder / ROWS_FILE).is_file():
            return None
        try:
            raw = json.loads((folder / ROWS_FILE).read_text())
            if raw.get("format") != FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, this greentune reads {FORMAT}")
            rows = {name: _load_row(folder, e) for name, e in raw["rows"].items()}
            ensembles = {
                name: SavedEnsemble(
                    str(e["kind"]),
                    [str(m) for m in e["members"]],
                    np.asarray(e["weights"], dtype=float) if "weights" in e else None,
                )
                for name, e in raw["ensembles"].items()
            }
            for name, ens in ensembles.items():
                lost = [m for m in ens.members if m != MODEL and m not in rows]
                if lost:
                    raise ValueError(f"{name}'s members {lost} are not kept")
                w = ens.weights
                if w is not None and (w.ndim != 2 or w.shape[1] != len(ens.members)):
                    raise ValueError(f"{name}'s weights are {w.shape}, not (steps, members)")
        except Exception as exc:  # OSError, a bad key or value, LightGBM's own error
            raise CheckpointError(
                f"{folder} is damaged ({exc}); run the training again to rebuild it"
            ) from None
        return cls(rows, ensembles)


def kept_names(run_path: Path) -> list[str]:
    """The rows ``run_path`` keeps, read from rows.json alone ([] without one, or damaged:
    loading it says what is wrong)."""
    try:
        raw = json.loads((run_path / ROWS_DIR / ROWS_FILE).read_text())
        return [*raw["rows"], *raw["ensembles"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


KINDS = ("naive", "ridge", "ridge_clock", "lightgbm")


def _load_row(folder: Path, entry: dict[str, Any]) -> SavedRow:
    if entry.get("kind") not in KINDS:
        raise ValueError(f"kind {entry.get('kind')!r} is none of {', '.join(KINDS)}")
    offsets = entry.get("offsets")
    ridges = {}
    for k, r in (entry.get("ridges") or {}).items():
        with np.load(folder / r["file"]) as z:
            ridges[int(k)] = LinearFit(
                z["weight"], z["x_mean"], z["y_mean"], float(r["alpha"]), 0.0, str(r["level"])
            )
    lgbm = [
        LgbmFit(
            str(f["form"]),
            dict(f["size"]),
            Booster.from_string((folder / f["file"]).read_text()),
            float(f["val_mae"]),
        )
        for f in entry.get("lightgbm") or []
    ]
    return SavedRow(
        kind=str(entry["kind"]),
        offsets={float(q): np.asarray(v, dtype=float) for q, v in offsets.items()}
        if offsets
        else None,
        period=int(entry.get("period", 0)),
        ridges=ridges,
        lgbm=lgbm,
    )


# ---------------------------------------------------------------------- from a finished run


def keep_rows(
    run_path: Path,
    data: ForecastData,
    forecasts: Mapping[str, Forecast],
    ensembles: Mapping[str, EnsembleRow],
    private: bool,
    log: Callable[[str], None],
) -> RowSet:
    """``kept_rows`` saved in ``run_path/rows`` and said in the log; a failed write (a full
    disk) is a warning: the run's scores stand, only ``--row`` is lost."""
    kept = kept_rows(data, forecasts, ensembles, private)
    try:
        kept.save(run_path)
    except GreentuneError as exc:
        log(f"warning: rows not kept ({exc}); predict and serve --row will refuse them")
        return RowSet({}, {})
    table = [n for n in kept.names if n in forecasts or n in ensembles]
    if table:
        designs = len(kept.names) - len(table)
        more = f" (and {designs} LightGBM designs the weighted ensemble weighs)" if designs else ""
        log(f"rows kept for predict and serve --row: {', '.join(table)}{more}")
    return kept


def kept_rows(
    data: ForecastData,
    forecasts: Mapping[str, Forecast],
    ensembles: Mapping[str, EnsembleRow],
    private: bool,
) -> RowSet:
    """The rows a run keeps: each servable baseline of ``forecasts`` (row -> its test forecast,
    which gives the quantile offsets) and each ensemble all of whose members are kept (or the
    network). Fits come from ``data``'s cache (the run's own); a private run keeps the seasonal
    naives' point forecasts only (their quantiles are calibrated on training rows) and no
    ensemble."""
    every = dict(forecasts)
    for ens in ensembles.values():  # the LightGBM designs a weighted ensemble weighs
        every.update({m: f for m, f in ens.members_test.items() if m not in every})
    rows: dict[str, SavedRow] = {}
    for name, fc in every.items():
        if private and name not in FITTED_ON_NOTHING:
            continue
        row = _fitted(data, name)
        if row is not None:
            # a naive's quantiles are calibrated on the training rows: not kept in a DP run
            row.offsets = None if private else _offsets(fc)
            rows[name] = row
    if private:  # privacy_report counts every ensemble as a non-private reference
        return RowSet(rows, {})
    kept = {
        name: SavedEnsemble(
            r.info["kind"], list(r.members_test), None if r.weights is None else r.weights.copy()
        )
        for name, r in ensembles.items()
        if all(m == MODEL or m in rows for m in r.members_test)
    }
    return RowSet(rows, kept)


def _fitted(data: ForecastData, name: str) -> SavedRow | None:
    """Row ``name`` with the run's fits, or None for a row that cannot be kept (the network,
    random_init, the peers)."""
    if name in NAIVE_PERIODS:
        return SavedRow("naive", period=steps_per(data, NAIVE_PERIODS[name]))
    if name == "linear":
        return SavedRow("ridge", ridges={-1: fit_linear(data)})
    if name == CLOCK:
        minutes = sorted(int(k.split("@")[1]) for k in data.cache if k.startswith("ridge@"))
        return SavedRow("ridge_clock", ridges={m: fit_linear_at(data, m) for m in minutes})
    if name == LIGHTGBM:
        return SavedRow("lightgbm", lgbm=[kept_fit(data, j) for j in range(data.n_targets)])
    if name.startswith(f"{LIGHTGBM}:"):
        label = name.split(":", 1)[1]
        return SavedRow(
            "lightgbm", lgbm=[design_fit(data, j, label) for j in range(data.n_targets)]
        )
    return None


def _offsets(fc: Forecast) -> dict[float, np.ndarray] | None:
    """The quantile offsets a baseline added to its point (the same for every origin)."""
    if not fc.quantiles:
        return None
    return {q: np.nanmedian(v - fc.point, axis=0) for q, v in fc.quantiles.items()}


# ---------------------------------------------------------------------- choosing a row


def row_for(run: RunDir, variant: str, row: str) -> tuple[str | None, RowSet | None]:
    """(the kept row ``row`` names, None for the network; the run's rows, loaded only for a kept
    row) for a forecasting ``run`` served as ``variant``; errors say what to do."""
    if run.config.task != "forecast":
        raise ConfigError(
            f"row {row!r}: {run.path} is a {run.config.task} run, which predicts with its "
            "network only; kept rows (baselines, ensembles) are a forecasting run's"
        )
    metrics = run.metrics
    recommended = metrics.energy.greenest if metrics.energy else None
    name = recommended if row == "recommended" else row
    if row == "recommended" and recommended is None:
        raise CheckpointError(
            f"{run.path} recommends no row (metrics.json has no greenest model); name one"
        )
    if name in (MODEL, metrics.model):
        return None, None
    if variant not in ORIGINAL:
        raise ConfigError(
            f"row {row!r}: a compressed variant ({variant}) forecasts with its network alone; "
            "the rows and the ensembles' weights belong to the run's own fp32 network. Ask for "
            "the run itself (no variant) to forecast with them"
        )
    folder = run.path / ROWS_DIR
    if not (folder / ROWS_FILE).is_file():
        raise CheckpointError(
            f"{run.path} keeps no fitted rows besides its network (made before greentune kept "
            f"them in {ROWS_DIR}/): it serves its network only; run it again to serve {name}"
        )
    rows = RowSet.load(run.path)
    assert rows is not None
    if name not in rows.names:
        why = f"{run.path} recommends {name}, which it does not keep" if row != name else None
        raise ConfigError(
            f"{why or f'{run.path}: no row {name!r} to forecast with'}; it keeps "
            f"{_listing(metrics.model, rows.names)}. Not kept: random_init and the peers (their "
            "networks are not saved), an ensemble with one of them as a member, and in a DP run "
            "every row fitted on the training data"
        )
    return name, rows


def _listing(network: str, names: Iterable[str]) -> str:
    return ", ".join([f"{network} (the network)", *names])
