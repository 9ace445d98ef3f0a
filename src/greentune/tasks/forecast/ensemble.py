"""A forecasting run's ensembles: its network and baselines combined, scored like any model.

The members' test forecasts are the ones already scored; their validation forecasts (the
network's, and the baselines' refitted or cached fits) are made inside the ``ensemble`` meter
window, where the weights are fitted. An ensemble's energy is its members' plus that window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from greentune.config import RunConfig
from greentune.data.windows import ForecastData
from greentune.errors import ConfigError
from greentune.evaluate.baselines import horizon_positions, run_baseline
from greentune.evaluate.ensemble import combine, fit_weights, member_windows
from greentune.results import Forecast, ModelResult
from greentune.tasks.forecast.predict import evaluate_forecast

MODEL = "model"
DEFAULT_MEMBERS = (MODEL, "linear", "lightgbm")
NOT_MEMBERS = ("random_init",)


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
    info: dict[str, Any]
    """metrics.json's ``ensembles.<name>``: members, weights per step."""


def ensemble_rows(
    cfg: RunConfig,
    data: ForecastData,
    season: int,
    test: dict[str, tuple[Forecast, ModelResult]],
    network_val: Callable[[], Forecast | None],
) -> dict[str, EnsembleRow]:
    """One row per kind of ``eval.ensembles``; ``test`` maps member -> (test forecast, its
    row), the network under ``MODEL``. Called inside the ``ensemble`` meter window."""
    names = [m for m in ensemble_members(cfg) if m in test]
    if len(names) < 2 or not cfg.eval.ensembles:
        return {}
    t0 = time.perf_counter()
    val = data.val.origins
    quantiles = cfg.model.quantiles
    val_fc: dict[str, Forecast] = {}
    for m in names:
        got = network_val() if m == MODEL else run_baseline(m, data, val, quantiles)
        assert got is not None, "the network's validation forecast was not made"
        val_fc[m] = got
    y_val = data.target_values()[horizon_positions(val, data.horizon)]
    weights = fit_weights(val_fc, y_val)
    fit_s = time.perf_counter() - t0
    origins = data.test.origins
    out = {}
    for kind in cfg.eval.ensembles:
        t1 = time.perf_counter()
        fc = combine(kind, {m: test[m][0] for m in names}, weights)
        fc.fit_s, fc.predict_s = fit_s, time.perf_counter() - t1
        windows = member_windows([test[m][1].energy_windows or {} for m in names], "ensemble")
        row = ModelResult(
            evaluate_forecast(data, origins, fc, season),
            fit_s=fc.fit_s + sum(test[m][1].fit_s or 0.0 for m in names),
            predict_s=fc.predict_s + sum(test[m][1].predict_s or 0.0 for m in names),
            predictions=len(origins),
            energy_windows=windows,
        )
        info: dict[str, Any] = {"kind": kind, "members": names}
        if kind == "weighted":
            info["weights_by_step"] = np.round(weights, 4).tolist()
        out[f"ensemble-{kind}"] = EnsembleRow(fc, row, info)
    return out
