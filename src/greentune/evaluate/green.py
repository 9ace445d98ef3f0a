"""Energy-normalised metrics and the greenest model that is good enough.

Each result in metrics.json names the ledger windows it is billed for (``energy_windows``:
window -> share, for ``fit`` and ``predict``). Windows under ``train`` add up over every session
of the run (a resumed run trains in pieces); every other window is taken from the latest ``run``
session only, so work redone after a resume is not billed twice.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from greentune.config import EnergyConfig, parse_target
from greentune.energy.ledger import Ledger, summarise

QUALITY = {"forecast": ("mape", "lower"), "classify": ("macro_f1", "higher")}


def bill_models(metrics: dict[str, Any], run_dir: Path, cfg: EnergyConfig) -> dict[str, Any]:
    """Add Wh, gCO2e, per-1,000-prediction and per-kWh figures to every result, and
    ``metrics['energy']`` with the run's totals and the greenest model within the target."""
    ledger = Ledger.load(run_dir)
    runs = [r for r in ledger.rows if r["command"] == "run"]
    started = next((s["started"] for s in reversed(ledger.sessions) if s["command"] == "run"), "")
    latest = [r for r in runs if r["start"] >= started]
    for row in metrics["test"].values():
        windows = row.get("energy_windows")
        if windows:
            row.update(_bill(windows, runs, latest, row.get("predictions", 0)))
    _quality_per_kwh(metrics)
    totals = ledger.totals(latest)
    metrics["energy"] = {
        "kinds": totals["all"]["kinds"],
        "carbon": ledger.sessions[-1].get("carbon") if ledger.sessions else None,
        "run_wh": totals["all"]["energy_j"] / 3600,
        "run_g": totals["all"]["emissions_g"],
        "by_phase_wh": {p: t["energy_j"] / 3600 for p, t in totals["by_phase"].items()},
        **greenest(metrics, parse_target(cfg.target)),
    }
    return metrics


def _bill(
    windows: dict[str, dict[str, float]],
    runs: list[dict[str, Any]],
    latest: list[dict[str, Any]],
    predictions: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in ("fit", "predict"):
        joules, grams = 0.0, 0.0
        for name, share in windows.get(part, {}).items():
            pool = runs if name.split("/")[0] == "train" else latest
            s = summarise([r for r in pool if r["window"] == name])
            joules += share * s["energy_j"]
            grams = math.nan if s["emissions_g"] is None else grams + share * s["emissions_g"]
        out[f"{part}_wh"], out[f"{part}_g"] = joules / 3600, grams
    out["energy_wh"] = out["fit_wh"] + out["predict_wh"]
    out["emissions_g"] = out["fit_g"] + out["predict_g"]
    if predictions:
        out["wh_per_1k_predictions"] = 1000 * out["predict_wh"] / predictions
        out["g_per_1k_predictions"] = 1000 * out["predict_g"] / predictions
    return out


def _quality_per_kwh(metrics: dict[str, Any]) -> None:
    """forecast: MAPE skill over weekly seasonal naive per kWh; classify: macro-F1 per kWh."""
    results = metrics["test"]
    ref = results.get("seasonal_naive_weekly", {}).get("mape")
    for row in results.values():
        kwh = row.get("energy_wh", 0.0) / 1000
        if kwh <= 0:
            continue
        if metrics["task"] == "classify":
            row["macro_f1_per_kwh"] = row["macro_f1"] / kwh
        elif ref:
            row["skill_per_kwh"] = (1 - row["mape"] / ref) / kwh


def greenest(metrics: dict[str, Any], target: float) -> dict[str, Any]:
    """The lowest-emission model whose quality is within ``target`` (relative) of the best."""
    key, better = QUALITY[metrics["task"]]
    rows = {n: r for n, r in metrics["test"].items() if "energy_wh" in r and _ok(r.get(key))}
    if not rows:
        return {}
    best_value = (min if better == "lower" else max)(r[key] for r in rows.values())
    best = next(n for n, r in rows.items() if r[key] == best_value)
    bound = best_value * (1 + target) if better == "lower" else best_value * (1 - target)
    ok = [n for n, r in rows.items() if (r[key] <= bound if better == "lower" else r[key] >= bound)]
    cost = "emissions_g" if all(_ok(rows[n].get("emissions_g")) for n in ok) else "energy_wh"
    green = min(ok, key=lambda n: rows[n][cost])
    return {
        "target": target,
        "quality_metric": key,
        "best": best,
        "greenest": green,
        "greenest_cost": cost,
        "energy_ratio_to_best": _ratio(rows[green]["energy_wh"], rows[best]["energy_wh"]),
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _ok(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
