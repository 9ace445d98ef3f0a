"""Are greentune's baselines as strong as a practitioner's? Every baseline on real series, the
same test windows, with the data-following defaults (day-ahead, splits from the data).

    .venv/bin/python benchmarks/baselines.py [--sets vic2014,vic_elec,pjm,isone]

- vic2014: the embedded demo (Victoria 2014, half-hourly, temperature + work day);
- vic_elec: Victoria 2012-2014 (../shared/data/demand/vic_elec), temperature, holidays;
- pjm: 3 PJM utilities (AEP, COMED, DOM), the last 3 years each, hourly, US holidays;
- isone: the 8 ISO-NE load zones, Jan-Apr 2017, hourly, dry-bulb and dew point (measured
  values used as a perfect weather forecast: said in the table).

Writes benchmarks/results/baselines.json and baselines.md (MAPE %, the LightGBM design kept on
validation, and whether LightGBM beats both seasonal naives). Wall seconds are in the JSON only:
they are not a figure of this benchmark.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info
from victoria import VIC_ELEC_ARGS

from greentune.config import build_config
from greentune.data.windows import prepare_forecast_data
from greentune.evaluate.baselines import run_baseline
from greentune.tasks.forecast.predict import evaluate_forecast, season_steps

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared" / "data"
ISONE = SHARED / "multiclient" / "isone_2017" / "isone_smd_2017_jan_apr_zones.csv"
WORK = RESULTS / "runs" / "baselines-data"
BASELINES = ("seasonal_naive_daily", "seasonal_naive_weekly", "linear", "lightgbm")
PJM_ZONES = ("AEP", "COMED", "DOM")


def pjm_series() -> dict[str, list[str]]:
    """The last 3 years of each chosen utility, one CSV each (federated.py's parser)."""
    from federated import prepare

    folder = prepare(3 * 365)
    return {
        f"pjm-{z}": [
            "data.source=csv",
            f"data.path={folder / f'{z}.csv'}",
            "data.time_col=time",
            "data.target=load_mw",
            "data.country=US",
            "data.fill_gaps=true",
        ]
        for z in PJM_ZONES
    }


def isone_series() -> dict[str, list[str]]:
    """One CSV per ISO-NE load zone (the control-area total left out), temperatures in C."""
    raw = pd.read_csv(ISONE)
    WORK.mkdir(parents=True, exist_ok=True)
    out = {}
    for zone, frame in raw.groupby("zone"):
        if zone == "ISO NE CA":
            continue
        name = str(zone).replace(" ", "_").replace(".", "")
        path = WORK / f"isone-{name}.csv"
        table = pd.DataFrame(
            {
                "time": frame["datetime_local_hour_begin"],
                "load_mw": frame["rt_demand_mw"],
                "temp_c": (frame["drybulb_f"] - 32) / 1.8,
                "dewpoint_c": (frame["dewpoint_f"] - 32) / 1.8,
            }
        )
        table.to_csv(path, index=False)
        out[f"isone-{name}"] = [
            "data.source=csv",
            f"data.path={path}",
            "data.time_col=time",
            "data.target=load_mw",
            "data.covariates=[temp_c,dewpoint_c]",
            "data.temperature_col=temp_c",
            "data.country=US",
            "data.fill_gaps=true",
        ]
    return out


def series(sets: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if "vic2014" in sets:
        out["vic2014"] = ["data.source=vic2014"]
    if "vic_elec" in sets:
        out["vic_elec"] = VIC_ELEC_ARGS
    if "pjm" in sets:
        out.update(pjm_series())
    if "isone" in sets:
        out.update(isone_series())
    return out


def score(name: str, args: list[str]) -> dict:
    cfg = build_config(overrides=args)
    data = prepare_forecast_data(cfg.data)
    season = season_steps(data, None)
    test = data.test.origins
    rows = {}
    for b in BASELINES:
        t0 = time.perf_counter()
        fc = run_baseline(b, data, test, (0.1, 0.5, 0.9))
        wall = time.perf_counter() - t0
        q = evaluate_forecast(data, test, fc, season)
        rows[b] = {"mape": q["mape"], "coverage_80": q.get("coverage_80"), "wall_s": wall}
        print(f"  {name:<22} {b:<24} MAPE {q['mape']:.3f}  {wall:6.1f} s", flush=True)
    naive = min(rows["seasonal_naive_daily"]["mape"], rows["seasonal_naive_weekly"]["mape"])
    kept = data.cache["lightgbm/0"]
    return {
        "rows": rows,
        "step": data.report.step,
        "n": data.report.rows,
        "chosen": list(data.report.notes),
        "test_windows": len(test),
        "lightgbm_design": f"{kept.form}, {kept.size.get('num_leaves', 63)} leaves",
        "lightgbm_beats_naives": rows["lightgbm"]["mape"] < naive,
        "lightgbm_vs_best_naive": rows["lightgbm"]["mape"] / naive,
    }


def markdown(results: dict) -> str:
    lines = [
        "| series | step | test windows | daily naive | weekly naive | linear | LightGBM "
        "(design kept) | LightGBM / best naive |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["series"].items():
        m = {k: v["mape"] for k, v in r["rows"].items()}
        lines.append(
            f"| {name} | {r['step']} | {r['test_windows']} | {m['seasonal_naive_daily']:.2f} | "
            f"{m['seasonal_naive_weekly']:.2f} | {m['linear']:.2f} | **{m['lightgbm']:.2f}** "
            f"({r['lightgbm_design']}) | {r['lightgbm_vs_best_naive']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="vic2014,vic_elec,pjm,isone")
    a = ap.parse_args()
    results = {"machine": machine_info(), "series": {}}
    for name, args in series(a.sets.split(",")).items():
        results["series"][name] = score(name, args)
    wins = [r["lightgbm_beats_naives"] for r in results["series"].values()]
    results["lightgbm_beats_both_naives"] = f"{sum(wins)} of {len(wins)}"
    results["median_lightgbm_vs_best_naive"] = float(
        np.median([r["lightgbm_vs_best_naive"] for r in results["series"].values()])
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "baselines.json").write_text(json.dumps(results, indent=2, default=str))
    (RESULTS / "baselines.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
