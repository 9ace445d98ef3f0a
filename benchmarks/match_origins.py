"""The ridge trained for the test's clock time (``data.match_origins``) against the ridge trained
on windows from every clock time, alone and weighted with LightGBM, scored on validation and
test windows that start at local midnight (the test's daily origins).

    .venv/bin/python benchmarks/match_origins.py [--datasets vic_elec,embedded]

Both ridges are greentune's own fit (``fit_linear``: alpha and design chosen on validation);
the only difference is which windows they are fitted and validated on. LightGBM is the
``lightgbm`` baseline of the same data (its own training rows; early-stopped and its design
chosen on the midnight validation windows), fitted once. The weighted ensembles are
``greentune.evaluate.ensemble``'s NNLS per horizon step, fitted on the validation windows and
scored there in-sample (the run's own rows cross-fit; this is a quick screen, not the run).
Ridge fits are deterministic: one run each, no seeds.

Writes benchmarks/results/match-origins.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from machine import git_commit, machine_info, write_results
from victoria import DATASETS, VIC_ELEC

from greentune.config import build_config
from greentune.data.windows import ForecastData, prepare_forecast_data
from greentune.evaluate.baselines import (
    BASELINES,
    BaselineOptions,
    horizon_positions,
    run_baseline,
)
from greentune.evaluate.ensemble import combine, fit_weights
from greentune.evaluate.ridge import fit_linear
from greentune.results import Forecast

RESULTS = Path(__file__).resolve().parent / "results"


def data_for(dataset: str, matched: bool) -> ForecastData:
    cfg = build_config(overrides=[*DATASETS[dataset], f"data.match_origins={matched}"])
    return prepare_forecast_data(cfg.data)


def ridge_forecasts(data: ForecastData, origins: np.ndarray) -> np.ndarray:
    return run_baseline("linear", data, origins, ()).point


def mape(data: ForecastData, point: np.ndarray, origins: np.ndarray) -> float:
    y = data.target_values()[horizon_positions(origins, data.horizon)]
    return float(np.nanmean(np.abs(point - y) / np.abs(y)) * 100)


def one(dataset: str) -> dict:
    every, matched = data_for(dataset, False), data_for(dataset, True)
    val, test = matched.val.origins, matched.test.origins  # local midnights
    rows: dict[str, dict] = {}
    fits = {}
    for name, data in (("ridge, every clock time", every), ("ridge, matched", matched)):
        t0 = time.perf_counter()
        fit = fit_linear(data)
        fits[name] = {
            "alpha": fit.alpha,
            "design": fit.level,
            "fit_s": time.perf_counter() - t0,
            # the ridge's own windows: one a day, or every origin (stride 1)
            "train_windows": len(data.train)
            if data is matched
            else data.val_start - data.horizon + 1 - data.context_length,
        }
        rows[name] = {"val": ridge_forecasts(data, val), "test": ridge_forecasts(data, test)}
    t0 = time.perf_counter()
    lgbm = BASELINES.get("lightgbm")
    rows["lightgbm"] = {
        "val": lgbm(matched, val, (), BaselineOptions()).point,
        "test": lgbm(matched, test, (), BaselineOptions()).point,
    }
    fits["lightgbm"] = {"fit_s": time.perf_counter() - t0}
    y_val = matched.target_values()[horizon_positions(val, matched.horizon)]
    combos = {
        "weighted: ridge (every clock time) + LightGBM": ["ridge, every clock time", "lightgbm"],
        "weighted: ridge (matched) + LightGBM": ["ridge, matched", "lightgbm"],
        "weighted: both ridges + LightGBM": [
            "ridge, every clock time",
            "ridge, matched",
            "lightgbm",
        ],
    }
    for label, members in combos.items():
        w = fit_weights({m: Forecast(rows[m]["val"]) for m in members}, y_val)
        rows[label] = {
            split: combine("weighted", {m: Forecast(rows[m][split]) for m in members}, w).point
            for split in ("val", "test")
        }
    lgbm_test = mape(matched, rows["lightgbm"]["test"], test)
    table = {
        name: {
            "val_mape": mape(matched, r["val"], val),
            "test_mape": mape(matched, r["test"], test),
            "test_vs_lightgbm": mape(matched, r["test"], test) / lgbm_test,
        }
        for name, r in rows.items()
    }
    return {"val_origins": len(val), "test_origins": len(test), "fits": fits, "rows": table}


def markdown(results: dict, machine: dict) -> str:
    out = [
        "# The ridge trained for the test's clock time (`data.match_origins`)",
        "",
        f"Machine: {machine.get('cpu', machine)}; commit {results['commit']}. MAPE % on "
        "validation and test windows from local midnight (the test's origins). Weighted "
        "ensembles: NNLS per step on validation, validation scored in-sample.",
    ]
    for dataset, r in results["datasets"].items():
        out += [
            "",
            f"## {dataset} ({r['val_origins']} validation, {r['test_origins']} test origins)",
            "",
            "| model | val MAPE % | test MAPE % | test / LightGBM |",
            "|---|---|---|---|",
        ]
        for name, row in r["rows"].items():
            out.append(
                f"| {name} | {row['val_mape']:.3f} | {row['test_mape']:.3f} | "
                f"{row['test_vs_lightgbm']:.3f} |"
            )
        out.append("")
        for name, f in r["fits"].items():
            if "alpha" in f:
                out.append(
                    f"- {name}: alpha {f['alpha']:g}, design {f['design']}, "
                    f"{f['train_windows']:,} training windows, {f['fit_s']:.0f} s"
                )
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="vic_elec,embedded")
    args = ap.parse_args()
    results: dict = {"commit": git_commit(), "datasets": {}}
    for dataset in args.datasets.split(","):
        if dataset == "vic_elec" and not VIC_ELEC.is_file():
            print(f"skipping vic_elec: {VIC_ELEC} not found")
            continue
        results["datasets"][dataset] = one(dataset)
    machine = machine_info()
    results["machine"] = machine
    write_results(RESULTS / "match-origins", results, markdown(results, machine))


if __name__ == "__main__":
    main()
