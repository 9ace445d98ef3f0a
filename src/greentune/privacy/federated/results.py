"""Test scores: each client's (on its own test windows) and the pooled ones in metrics.json.

A client scores the chosen global weights, its local-only reference (the same network, its
skip path fitted on its own windows, trained on its data alone for the same rounds and steps,
the best round on its own validation windows) and the seasonal naives; it keeps its own run
directory (the global network with its own scaler: loadable by ``Predictor``, compressible,
servable). The server pools the clients' scores: MAE, MAPE and sMAPE weighted by test points
(exact: they are means over points), RMSE from the weighted MSE.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from greentune.config import replace
from greentune.evaluate.baselines import baseline_options, run_baseline
from greentune.privacy.federated import protocol as P
from greentune.privacy.federated.client import (
    Local,
    alone,
    load_trainable,
    local_round,
    test_scores,
    trainable_arrays,
    validation_loss,
)
from greentune.results import ModelResult, RunMetrics
from greentune.rundir import RunDir
from greentune.tasks.forecast.artifacts import save_model
from greentune.tasks.forecast.predict import evaluate_forecast, season_steps

FEDERATED, LOCAL, START = "federated", "local", "start"
NAIVES = ("seasonal_naive_daily", "seasonal_naive_weekly")
SCORES = ("mae", "rmse", "mse", "mape", "smape", "mase", "pinball", "coverage")


def client_test(
    local: Local,
    arrays: dict[str, np.ndarray],
    model: Any,
    start: dict[str, np.ndarray],
    privacy: dict[str, Any] | None,
    workdir: str | None,
) -> dict[str, float]:
    """``row/score`` for every row this client scores, plus its window counts (a
    ``MetricRecord``'s content: named numbers only). Rows: the federated model, the start it
    trained from (round 0: the federated skip fit and the untrained network), the local-only
    reference, the seasonal naives."""
    rows = {FEDERATED: test_scores(local, arrays), START: test_scores(local, start)}
    if LOCAL in local.cfg.federated.references:
        rows[LOCAL] = _local_only(local, model, start)
    data = local.data
    season = season_steps(data, local.cfg.eval.season_length)
    for name in NAIVES:
        fc = run_baseline(
            name, data, data.test.origins, local.cfg.model.quantiles, baseline_options(local.cfg)
        )
        rows[name] = evaluate_forecast(data, data.test.origins, fc, season)
    load_trainable(model, arrays)
    if workdir:
        _keep_run(local, model, Path(workdir), rows, privacy)
    out = {
        f"{row}/{k}": float(v)
        for row, scores in rows.items()
        for k, v in scores.items()
        if k in SCORES
    }
    out[P.WEIGHT] = float(len(data.test) * data.horizon * data.n_targets)
    if privacy:
        out["epsilon"] = float(privacy["epsilon"])
        out["delta"] = float(privacy["delta"])
    return out


def _local_only(local: Local, model: Any, start: dict[str, np.ndarray]) -> dict[str, float]:
    """The same network on this client's data alone: its skip path fitted on its own windows
    (``alone``; else the same start), the same rounds of local steps, the best round on its
    own validation windows."""
    fed = local.cfg.federated
    own = alone(local)
    if own is not None:
        assert own.model is not None
        local, start = own, trainable_arrays(own.model)
    arrays, best, best_loss = start, start, validation_loss(local, start)
    for r in range(1, fed.rounds + 1):
        arrays, _, _ = local_round(local, arrays, local.cfg.seed + 1000 * r, [])
        loss = validation_loss(local, arrays)
        if loss < best_loss:
            best, best_loss = arrays, loss
    scores = test_scores(local, best)
    if own is None:
        load_trainable(model, best)
    return scores


def _keep_run(
    local: Local,
    model: Any,
    workdir: Path,
    rows: dict[str, dict[str, float]],
    privacy: dict[str, Any] | None,
) -> None:
    """The client's own run directory: the global network with this client's scaler, and
    every row it scored on its own test windows."""
    cfg = replace(local.cfg, output_dir=str(workdir), name=local.name)
    run = RunDir(workdir / local.name)
    run.path.mkdir(parents=True, exist_ok=True)
    run.start(cfg)
    save_model(model, None, local.data, run.model_dir)
    n = len(local.data.test)
    run.write_metrics(
        RunMetrics(
            task="forecast",
            model=FEDERATED,
            test={row: ModelResult(scores, predictions=n) for row, scores in rows.items()},
            privacy=privacy,
            data={
                "source": local.data.report.origin,
                "windows": {"test": n},
                **({"notes": list(local.notes)} if local.notes else {}),
                **({"warnings": w} if (w := list(local.data.report.warnings)) else {}),
            },
        )
    )
    run.set_status("complete")


def pooled(replies: list[Any]) -> dict[str, dict[str, float]]:
    """{row: scores} over every client's test points (weights: test points per client)."""
    rows = sorted({k.split("/")[0] for r in replies for k in r.metrics if "/" in k})
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        scores: dict[str, float] = {}
        for score in SCORES:
            key = f"{row}/{score}"
            have = [r for r in replies if key in r.metrics]
            if not have:
                continue
            w = np.asarray([r.metrics[P.WEIGHT] for r in have])
            v = np.asarray([r.metrics[key] for r in have])
            scores[score] = float(np.sum(w * v) / np.sum(w))
        if "mse" in scores:
            scores["rmse"] = math.sqrt(scores["mse"])
        scores.pop("mase", None)  # each client's own scale: not a pooled quantity
        out[row] = scores
    return out


def per_client(replies: list[Any]) -> dict[str, dict[str, dict[str, float]]]:
    """{client: {row: scores}} as the clients sent them."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in sorted(replies, key=lambda r: r.client):
        rows: dict[str, dict[str, float]] = {}
        for key, value in r.metrics.items():
            if "/" in key:
                row, score = key.split("/", 1)
                rows.setdefault(row, {})[score] = value
        out[r.client] = rows
    return out
