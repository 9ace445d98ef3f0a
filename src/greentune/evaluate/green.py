"""Energy-normalised metrics and the greenest model that is good enough.

Each result names the ledger windows it is billed for (``energy_windows``: window -> share, for
``fit`` and ``predict``). Windows under ``train`` add up over every session of the run (a
resumed run trains in pieces); every other window is taken from the latest ``run`` session only,
so work redone after a resume is not billed twice.
"""

from __future__ import annotations

import math
from typing import Any

from greentune.config import EnergyConfig, parse_target
from greentune.energy.base import kind_of
from greentune.energy.ledger import Ledger, summarise
from greentune.results import EnergyBill, EnergySummary, Quality, RunMetrics


def bill_models(
    metrics: RunMetrics, ledger: Ledger, cfg: EnergyConfig, quality: Quality
) -> RunMetrics:
    """Add Wh, gCO2e, per-1,000-prediction and per-kWh figures to every result, and
    ``metrics.energy`` with the run's totals and the greenest model within the target."""
    runs = [r for r in ledger.rows if r["command"] == "run"]
    started = next((s["started"] for s in reversed(ledger.sessions) if s["command"] == "run"), "")
    latest = [r for r in runs if r["start"] >= started]
    for row in metrics.test.values():
        if row.energy_windows:
            row.bill = _bill(row.energy_windows, runs, latest, row.predictions or 0)
    _quality_per_kwh(metrics, quality)
    totals = ledger.totals(latest)
    metrics.energy = EnergySummary(
        kinds=totals["all"]["kinds"],
        carbon=ledger.sessions[-1].get("carbon") if ledger.sessions else None,
        run_wh=totals["all"]["energy_j"] / 3600,
        run_g=totals["all"]["emissions_g"],
        by_phase_wh={p: t["energy_j"] / 3600 for p, t in totals["by_phase"].items()},
        **greenest(metrics, parse_target(cfg.target), quality),
    )
    return metrics


def bill_windows(
    ledger: Ledger, windows: dict[str, dict[str, float]], predictions: int = 0
) -> EnergyBill:
    """The bill of ``windows`` in a run's ledger, priced as ``bill_models`` prices a row."""
    runs = [r for r in ledger.rows if r["command"] == "run"]
    started = next((s["started"] for s in reversed(ledger.sessions) if s["command"] == "run"), "")
    return _bill(windows, runs, [r for r in runs if r["start"] >= started], predictions)


def _bill(
    windows: dict[str, dict[str, float]],
    runs: list[dict[str, Any]],
    latest: list[dict[str, Any]],
    predictions: int,
) -> EnergyBill:
    parts: dict[str, tuple[float, float]] = {}
    kinds: list[str] = []
    for part in ("fit", "predict"):
        joules, grams = 0.0, 0.0
        for name, share in windows.get(part, {}).items():
            pool = runs if name.split("/")[0] == "train" else latest
            s = summarise([r for r in pool if r["window"] == name])
            kinds += s["kinds"] if share else []
            joules += share * s["energy_j"]
            grams = math.nan if s["emissions_g"] is None else grams + share * s["emissions_g"]
        parts[part] = (joules / 3600, grams)
    (fit_wh, fit_g), (predict_wh, predict_g) = parts["fit"], parts["predict"]
    bill = EnergyBill(fit_wh, fit_g, predict_wh, predict_g, fit_wh + predict_wh, fit_g + predict_g)
    bill.energy_kind = kind_of(kinds)
    if predictions:
        bill.wh_per_1k_predictions = 1000 * predict_wh / predictions
        bill.g_per_1k_predictions = 1000 * predict_g / predictions
    return bill


def _quality_per_kwh(metrics: RunMetrics, quality: Quality) -> None:
    """Quality per kWh: skill over the task's reference baseline (forecast: weekly seasonal
    naive, by MAPE), or the quality metric itself (classify: macro-F1)."""
    key = quality.metric
    ref_row = metrics.test.get(quality.skill_reference or "")
    ref = ref_row.scores.get(key) if ref_row else None
    for row in metrics.test.values():
        kwh = (row.bill.energy_wh if row.bill else 0.0) / 1000
        if kwh <= 0:
            continue
        if quality.skill_reference is None:
            row.per_kwh[f"{key}_per_kwh"] = row.scores[key] / kwh
        elif ref:
            row.per_kwh["skill_per_kwh"] = (1 - row.scores[key] / ref) / kwh


def greenest(metrics: RunMetrics, target: float, quality: Quality) -> dict[str, Any]:
    """The lowest-emission model whose quality is within ``target`` (relative) of the best,
    both judged on validation scores when every row has one (``metrics.validation``), else on
    test. In a private run only private models compete (non-private references are left out)."""
    key = quality.metric
    refs = set((metrics.privacy or {}).get("non_private_reference") or [])
    rows = {
        n: r
        for n, r in metrics.test.items()
        if r.bill is not None and _ok(r.scores.get(key)) and n not in refs
    }
    if not rows:
        return {}
    val = metrics.validation or {}
    on_val = all(_ok((val.get(n) or {}).get(key)) for n in rows)
    values = {n: float(val[n][key] if on_val else r.scores[key]) for n, r in rows.items()}
    best_value = (max if quality.higher_is_better else min)(values.values())
    best = next(n for n, v in values.items() if v == best_value)
    bound = best_value * (1 - target) if quality.higher_is_better else best_value * (1 + target)
    ok = [n for n, v in values.items() if (v >= bound if quality.higher_is_better else v <= bound)]
    bills = {n: r.bill for n, r in rows.items() if r.bill is not None}
    cost = "emissions_g" if all(_ok(bills[n].emissions_g) for n in ok) else "energy_wh"
    sign = -1.0 if quality.higher_is_better else 1.0
    # rows that bill the same (the ensembles of one run share their members' energy) are
    # told apart by quality, not by the order they were listed in
    green = min(ok, key=lambda n: (getattr(bills[n], cost), sign * values[n]))
    return {
        "target": target,
        "quality_metric": key,
        "best": best,
        "greenest": green,
        "greenest_cost": cost,
        "energy_ratio_to_best": _ratio(bills[green].energy_wh, bills[best].energy_wh),
        "chosen_on": "validation" if on_val else "test",
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _ok(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
