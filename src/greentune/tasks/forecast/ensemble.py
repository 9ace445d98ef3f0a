"""A forecasting run's ensembles: its network and baselines combined, scored like any model.

The members' test forecasts are the ones already scored; their validation forecasts are the
run's (made in a ``select/<row>`` meter window each, where every row gets a validation score).
The weights are fitted in the ``ensemble`` window. An ensemble's energy is its members', their
validation forecasts' and ``ensemble``'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from greentune.config import RunConfig
from greentune.data.windows import ForecastData
from greentune.errors import ConfigError
from greentune.evaluate.baselines import baseline_options, horizon_positions, run_baseline
from greentune.evaluate.ensemble import combine, fit_weights, member_windows
from greentune.evaluate.lgbm import design_forecasts
from greentune.results import Forecast, ModelResult, RunMetrics
from greentune.tasks.forecast.predict import evaluate_forecast, prediction_rows
from greentune.train.callbacks import Window

MODEL = "model"
LIGHTGBM = "lightgbm"
SELECT = "select"
"""Validation forecasts are made in a meter window per row, ``select/<row>`` (the network's
``select/model``): an ensemble is billed for its members' only."""
DEFAULT_MEMBERS = (MODEL, "linear", LIGHTGBM, "linear_clock")
RANDOM_INIT = "random_init"
"""The network from random weights: an ablation, never an ensemble member."""
NOT_MEMBERS = (RANDOM_INIT,)


def ensemble_members(cfg: RunConfig) -> list[str]:
    """The members ``eval.ensemble_members`` names (checked), or the default ones that run."""
    given = cfg.eval.ensemble_members
    if not given:
        return [m for m in DEFAULT_MEMBERS if m == MODEL or m in cfg.eval.baselines]
    bad = [m for m in given if m in NOT_MEMBERS or (m != MODEL and m not in cfg.eval.baselines)]
    if bad:
        raise ConfigError(
            f"eval.ensemble_members: {', '.join(bad)} cannot join: members are '{MODEL}' (the "
            f"run's network) and baselines of eval.baselines other than {', '.join(NOT_MEMBERS)}"
        )
    return list(given)


@dataclass
class EnsembleRow:
    forecast: Forecast
    result: ModelResult
    val_forecast: Forecast
    """On the validation origins; a weighted ensemble's is cross-fitted (each half of the
    validation windows combined with weights fitted on the other half), so its validation
    score is not scored on the data its weights were fitted on."""
    info: dict[str, Any]
    """metrics.json's ``ensembles.<name>``: members, weights per step."""
    members_test: dict[str, Forecast]
    """Each member's test forecast, in the combination's order (LightGBM's designs included)."""
    weights: np.ndarray | None = None
    """(H, M) a weighted ensemble's weights, unrounded."""


def ensemble_rows(
    cfg: RunConfig,
    data: ForecastData,
    season: int,
    test: dict[str, tuple[Forecast, ModelResult]],
    val: dict[str, Forecast],
) -> dict[str, EnsembleRow]:
    """One row per kind of ``eval.ensembles``; ``test`` maps member -> (test forecast, its
    row) and ``val`` member -> validation forecast, the network under ``MODEL``."""
    names = [m for m in ensemble_members(cfg) if m in test and m in val]
    if len(names) < 2 or not cfg.eval.ensembles:
        return {}
    t0 = time.perf_counter()
    origins_val, origins = data.val.origins, data.test.origins
    y_val = data.target_values()[horizon_positions(origins_val, data.horizon)]
    members_val = {m: val[m] for m in names}
    members_test = {m: test[m][0] for m in names}
    # the weighted ensemble's own members: LightGBM's other designs join it (see the config)
    weighted_val, weighted_test = members_val, members_test
    if "weighted" in cfg.eval.ensembles and cfg.eval.ensemble_designs and LIGHTGBM in names:
        weighted_val, weighted_test = (
            with_designs(data, members, o, cfg.model.quantiles)
            for members, o in ((members_val, origins_val), (members_test, origins))
        )
    weights = fit_weights(weighted_val, y_val) if "weighted" in cfg.eval.ensembles else None
    fit_s = time.perf_counter() - t0
    out = {}
    for kind in cfg.eval.ensembles:
        t1 = time.perf_counter()
        own_val, own_test = (
            (weighted_val, weighted_test) if kind == "weighted" else (members_val, members_test)
        )
        fc = combine(kind, own_test, weights)
        fc.fit_s, fc.predict_s = fit_s, time.perf_counter() - t1
        windows = member_windows([test[m][1].energy_windows or {} for m in names], "ensemble")
        for m in names:  # the members' validation forecasts
            windows["fit"][f"{SELECT}/{m}"] = 1.0
        row = ModelResult(
            evaluate_forecast(data, origins, fc, season),
            fit_s=fc.fit_s + sum(test[m][1].fit_s or 0.0 for m in names),
            predict_s=fc.predict_s + sum(test[m][1].predict_s or 0.0 for m in names),
            predictions=len(origins),
            energy_windows=windows,
        )
        info: dict[str, Any] = {"kind": kind, "members": list(own_val)}
        if kind == "weighted" and weights is not None:
            info["weights_by_step"] = np.round(weights, 4).tolist()
        out[f"ensemble-{kind}"] = EnsembleRow(
            fc,
            row,
            cross_fitted(kind, own_val, y_val),
            info,
            own_test,
            weights if kind == "weighted" else None,
        )
    return out


def with_designs(
    data: ForecastData,
    members: dict[str, Forecast],
    origins: np.ndarray,
    quantiles: tuple[float, ...],
) -> dict[str, Forecast]:
    """``members`` with each LightGBM design tried beside the kept one as a member of its own,
    ``lightgbm:<form>-<leaves>`` (the kept one stays ``lightgbm``)."""
    designs = design_forecasts(data, origins, quantiles)
    return {**members, **{f"{LIGHTGBM}:{k}": fc for k, fc in designs.items()}}


def cross_fitted(kind: str, val: dict[str, Forecast], y: np.ndarray) -> Forecast:
    """The ensemble's validation forecast; weighted: each half with the other half's weights."""
    if kind != "weighted":
        return combine(kind, val)
    n = len(y)
    halves = [np.arange(n // 2), np.arange(n // 2, n)]
    parts = []
    for own, other in (halves, halves[::-1]):
        w = fit_weights({m: _rows(f, other) for m, f in val.items()}, y[other])
        parts.append(combine(kind, {m: _rows(f, own) for m, f in val.items()}, w))
    point = np.concatenate([p.point for p in parts])
    levels = parts[0].quantiles or {}
    q = {k: np.concatenate([p.quantiles[k] for p in parts if p.quantiles]) for k in levels}
    return Forecast(point, q or None)


def _rows(fc: Forecast, idx: np.ndarray) -> Forecast:
    q = {k: v[idx] for k, v in fc.quantiles.items()} if fc.quantiles else None
    return Forecast(fc.point[idx], q)


def select(
    cfg: RunConfig,
    data: ForecastData,
    season: int,
    scored: dict[str, tuple[Forecast, ModelResult]],
    val_fc: dict[str, Forecast],
    metrics: RunMetrics,
    window: Window,
    log: Callable[[str], None],
) -> tuple[list[pd.DataFrame], pd.DataFrame, dict[str, EnsembleRow]]:
    """Validation scores for every row (what the greenest-model choice reads) and the
    ensemble rows, added to ``metrics``; returns the ensembles' test prediction rows, every
    row's validation prediction rows and the ensembles. ``val_fc`` holds the validation
    forecasts made already (the network's, random_init's)."""
    val = data.val.origins
    for b in scored:
        if b not in val_fc:  # the baselines' fits are reused (ridge, LightGBM cached)
            # a window per row: an ensemble pays for its members' validation forecasts only
            # (a peer refitted per origin, as MSTL, costs minutes here)
            with window(f"{SELECT}/{b}"):
                val_fc[b] = run_baseline(b, data, val, cfg.model.quantiles, baseline_options(cfg))
    with window("ensemble"):
        rows = ensemble_rows(cfg, data, season, scored, val_fc)
    frames, ensembles = [], {}
    for name, row in rows.items():
        metrics.test[name] = row.result
        ensembles[name] = row.info
        val_fc[name] = row.val_forecast
        frames.append(prediction_rows(data, data.test.origins, row.forecast, name))
        log(f"{name}: {', '.join(row.info['members'])}")
    metrics.ensembles = ensembles or None
    names = {n: metrics.model if n == MODEL else n for n in val_fc}
    metrics.validation = {
        names[n]: evaluate_forecast(data, val, f, season) for n, f in val_fc.items()
    }
    val_rows = pd.concat([prediction_rows(data, val, f, names[n]) for n, f in val_fc.items()])
    return frames, val_rows.reset_index(drop=True), rows
