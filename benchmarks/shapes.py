"""Four data shapes a new user brings, each run with no options but where the data is:
`greentune run --data FILE data.target=... data.time_col=...`, defaults chosen from the data.

    .venv/bin/python benchmarks/shapes.py [--shapes 12w-30min,3y-hourly,2y-daily,1m-15min]

- 12w-30min: the last 12 weeks of Victoria (../shared/data/demand/vic_elec), half-hourly,
  with temperature;
- 3y-hourly: the last 3 years of PJM's AEP zone (../shared/data/multiclient/pjm_hourly), no
  weather;
- 2y-daily: the same AEP series summed per day, the last 2 years (daily MWh);
- 1m-15min: the last 30 days of Victoria, linearly interpolated from 30 to 15 minutes (no
  real 15-minute load is at hand: a check that the shape runs and what the defaults choose;
  interpolation makes the series smoother than real quarter-hours, so its MAPE flatters).

Two more, one building's meter rather than a grid (``--shapes 9m-hourly-building,
9m-daily-building --tag buildings``), as the files come (../shared/data/multiclient/bdg2_samples,
Building Data Genome 2, building_1, no weather):
- 9m-hourly-building: 2016-01-01 to 09-30, hourly kWh;
- 9m-daily-building: the same months, daily kWh; its last day holds one hour (the export's
  partial period), which the run warns about;
- 1y-hourly-carbon: Great Britain's hourly carbon intensity in 2023 (Electricity Maps, direct
  gCO2eq/kWh, ../shared/data/carbon/electricitymaps/GB_2023_hourly.csv as it is): what the
  scheduler forecasts, a series that comes near zero on windy days.

Writes benchmarks/results/shapes[-TAG].json and .md: the defaults chosen, wall time, energy
(modelled on this machine: the kind is in the table), test MAPE of the network, both seasonal
naives, the linear model (the network's ridge start) and LightGBM, the recommended row's sMAPE
beside its MAPE, and the run's data warnings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import git_commit, machine_info, write_results

import greentune as gt
from greentune.config import build_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = RESULTS / "runs" / "shapes-data"
VIC_ELEC = ROOT.parent / "shared" / "data" / "demand" / "vic_elec" / "vic_electricity.csv"
BDG2 = ROOT.parent / "shared" / "data" / "multiclient" / "bdg2_samples"
CARBON = ROOT.parent / "shared" / "data" / "carbon" / "electricitymaps"
ROWS = ("network", "linear", "lightgbm", "seasonal_naive_daily", "seasonal_naive_weekly")


def _vic(days: int) -> pd.DataFrame:
    raw = pd.read_csv(VIC_ELEC)
    times = pd.to_datetime(raw["Time"], utc=True).dt.tz_convert("Australia/Melbourne")
    frame = pd.DataFrame({"time": times, "demand_mw": raw["Demand"], "temp_c": raw["Temperature"]})
    return frame[frame["time"] > frame["time"].max() - pd.Timedelta(days=days)]


def _aep(days: int) -> pd.DataFrame:
    from federated import prepare

    frame = pd.read_csv(prepare(3 * 365) / "AEP.csv", parse_dates=["time"])
    return frame[frame["time"] > frame["time"].max() - pd.Timedelta(days=days)]


def prepare_shapes() -> dict[str, tuple[Path, list[str]]]:
    """One CSV per shape and the only options its run gets: which columns are what."""
    WORK.mkdir(parents=True, exist_ok=True)
    vic_args = ["data.target=demand_mw", "data.covariates=[temp_c]"]
    aep_args = ["data.target=load_mw", "data.fill_gaps=true"]
    shapes: dict[str, tuple[pd.DataFrame, list[str]]] = {
        "12w-30min": (_vic(84), vic_args),
        "3y-hourly": (_aep(3 * 365), aep_args),
    }
    daily = _aep(2 * 365 + 1).set_index("time")["load_mw"].resample("1D").sum(min_count=20)
    shapes["2y-daily"] = (daily.iloc[1:-1].rename("load_mw").reset_index(), aep_args)
    month = _vic(30).set_index("time")
    quarter = month.resample("15min").interpolate("time").iloc[:-1]
    shapes["1m-15min"] = (quarter.reset_index(), vic_args)
    out = {}
    for name, (frame, args) in shapes.items():
        path = WORK / f"{name}.csv"
        frame.to_csv(path, index=False)
        out[name] = (path, ["data.time_col=time", *args])
    building = ["data.time_col=timestamp", "data.target=building_1"]
    out["9m-hourly-building"] = (BDG2 / "bdg2_hourly_sample.csv", building)  # read as it is
    out["9m-daily-building"] = (BDG2 / "bdg2_daily_sample.csv", building)
    carbon = ["data.time_col=Datetime (UTC)", "data.target=Carbon Intensity gCO₂eq/kWh (direct)"]
    out["1y-hourly-carbon"] = (CARBON / "GB_2023_hourly.csv", carbon)
    return out


def run_shape(name: str, path: Path, args: list[str], sets: list[str], tag: str) -> dict:
    """The shape's run, named shape-NAME (shape-NAME-TAG with ``--set`` settings)."""
    runs = RESULTS / "runs"
    run_name = f"shape-{name}" + (f"-{tag}" if sets else "")
    shutil.rmtree(runs / run_name, ignore_errors=True)
    cfg = build_config(
        overrides=[
            "data.source=csv",
            f"data.path={path}",
            *args,
            *sets,
            f"output_dir={runs}",
            f"name={run_name}",
        ]
    )
    t0 = time.perf_counter()
    run = gt.run(cfg, echo=lambda m: print(f"  [{name}] {m}", flush=True))
    return summarise(name, run, time.perf_counter() - t0)


def summarise(name: str, run: gt.RunDir, wall: float) -> dict:
    m = run.metrics.to_dict()
    d = run.config.data
    rows = {("network" if k == m["model"] else k): v for k, v in m["test"].items()}
    green = m["energy"]["greenest"]
    return {
        "rows": {
            k: {
                "mape": v["mape"],
                "smape": v.get("smape"),
                "mase": v.get("mase"),
                "energy_wh": v.get("energy_wh"),
            }
            for k, v in rows.items()
        },
        "ranked_by": m["energy"].get("quality_metric"),
        "recommended": "network" if green == m["model"] else green,
        "chosen_on": m["energy"]["chosen_on"],
        "chosen": list(d.chosen),
        "shape": {
            "step": m["data"]["step"],
            "rows": m["data"]["rows"],
            "horizon": d.horizon,
            "context": d.context_length,
            "val": d.val,
            "test": d.test,
            "train_stride": d.train_stride,
            "patch_len": run.config.model.patch_len,
            "windows": m["data"]["windows"],
        },
        "training": {
            k: m["training"][k] for k in ("steps", "best_epoch", "stop_reason", "train_s")
        },
        "wall_s": wall,
        "run_wh": m["energy"]["run_wh"],
        "energy_kinds": m["energy"]["kinds"],
        "data_warnings": m["data"].get("warnings", []),
    }


def markdown(results: dict) -> str:
    lines = [
        "| shape | rows, step | defaults chosen (horizon / context / val / test / stride / "
        "patch) | wall s | run Wh | network | linear (ridge start) | LightGBM | ensemble | "
        "daily naive | weekly naive | recommended (on validation): test MAPE (sMAPE, MASE) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    warned = []
    for name, r in results["shapes"].items():
        s, m = r["shape"], {k: v["mape"] for k, v in r["rows"].items()}
        lines.append(
            f"| {name} | {s['rows']:,}, {s['step']} | {s['horizon']} / {s['context']} / "
            f"{s['val']} / {s['test']} / {s['train_stride']} / {s['patch_len']} | "
            f"{r['wall_s']:.0f} | {r['run_wh']:.2f} ({'/'.join(r['energy_kinds'])}) | "
            f"{m['network']:.2f} | {m['linear']:.2f} | {m['lightgbm']:.2f} | "
            f"{m['ensemble-weighted']:.2f} | {m['seasonal_naive_daily']:.2f} | "
            f"{m['seasonal_naive_weekly']:.2f} | {r['recommended']}: {m[r['recommended']]:.2f}"
            f"{_smape(r['rows'][r['recommended']])} |"
        )
        warned += [f"- {name}: {w}" for w in r.get("data_warnings", [])]
    if warned:
        lines += ["", "Data warnings of these runs:", "", *warned]
    return "\n".join(lines) + "\n"


def _smape(row: dict) -> str:
    """sMAPE (and MASE, where recorded) beside the recommended row's MAPE."""
    if row.get("smape") is None:
        return ""
    mase = f", MASE {row['mase']:.3f}" if row.get("mase") is not None else ""
    return f" ({row['smape']:.2f}{mase})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="12w-30min,3y-hourly,2y-daily,1m-15min")
    ap.add_argument("--tag", default="", help="writes shapes-TAG.json|md")
    ap.add_argument(
        "--set", action="append", default=[], help="KEY=VALUE for every run (needs --tag)"
    )
    ap.add_argument(
        "--from-runs", action="store_true", help="re-summarise the finished runs (wall s kept)"
    )
    a = ap.parse_args()
    if a.set and not a.tag:
        raise SystemExit("--set needs --tag (its runs and results are kept apart)")
    wanted = a.shapes.split(",")
    stem = RESULTS / f"shapes{'-' + a.tag if a.tag else ''}"
    results: dict = {"machine": machine_info(), "commit": git_commit(), "shapes": {}}
    if a.from_runs:
        before = json.loads(stem.with_suffix(".json").read_text())
        results["machine"] = before["machine"]
        results["commit"] = before.get("commit", "not recorded")
        results["set"] = before.get("set", [])
        for name in wanted:
            tagged = f"-{a.tag}" if before.get("set") else ""
            run = gt.RunDir.open(RESULTS / "runs" / f"shape-{name}{tagged}")
            results["shapes"][name] = summarise(name, run, before["shapes"][name]["wall_s"])
    else:
        for name, (path, args) in prepare_shapes().items():
            if name in wanted:
                results["shapes"][name] = run_shape(name, path, args, a.set, a.tag)
    results["set"] = a.set
    write_results(stem, results, markdown(results))


if __name__ == "__main__":
    main()
