"""The Python API refactor against the code before it, side by side on this machine.

    .venv/bin/python benchmarks/api_parity.py --before d54be08 [--repeats 5] [--skip-run]

1. parity: the default ``greentune run`` (Victoria 2014, MiniLM + LoRA, every baseline) from the
   code at ``--before`` and from this tree; every model's test scores, the loss curve and the
   validation curve must agree to the last digit; wall time and the run's energy are reported
   beside each other (one run each: a check, not a timing);
2. the ``greentune:RUN`` carbon forecaster, which before the API wrote a temporary CSV and loaded
   the model again for each recursive step: 7-day forecasts (168 hourly slots, 4 calls of a
   48-slot model) from a MiniLM run trained on the GB 2023 Electricity Maps trace, issued on
   ``--issues`` consecutive days after one warm-up forecast (imports and caches are paid once in
   both), in fresh processes interleaved before/after; the median seconds per forecast.

The code at ``--before`` is checked out with ``git worktree`` in a temporary folder and run with
this tree's virtual environment (PYTHONPATH). Writes benchmarks/results/api_parity.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TRACE = ROOT.parent / "shared" / "data" / "carbon" / "electricitymaps" / "GB_2023_hourly.csv"
SKIP = ("_s", "_wh", "_g", "kwh", "energy_windows")

FORECAST = """
import statistics, sys, time
import numpy as np, pandas as pd
from greentune.cli import quiet_libraries
quiet_libraries()
from greentune.schedule.forecast import make_forecaster
trace = pd.read_csv(sys.argv[2])
times = pd.DatetimeIndex(pd.to_datetime(trace["Datetime (UTC)"], utc=True))
values = trace["Carbon Intensity gCO₂eq/kWh (LCA)"].to_numpy(float)
t0 = time.perf_counter()
forecaster = make_forecaster("greentune:" + sys.argv[1])
forecaster.predict(values, times, len(values) - 24 * 40, 48)  # warm-up: imports, caches
setup_s = time.perf_counter() - t0
seconds, errors = [], []
for day in range(int(sys.argv[3])):  # a plan issued every day for a week ahead
    issue = len(values) - 24 * (30 - day)
    t1 = time.perf_counter()
    out = forecaster.predict(values, times, issue, 168)
    seconds.append(time.perf_counter() - t1)
    truth = values[issue : issue + 168]
    errors.append(float(np.mean(np.abs(out - truth) / truth)))
print(setup_s, statistics.median(seconds), statistics.mean(errors))
"""


def env_for(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1"}


def default_run(src: Path, out: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "greentune", "run", f"output_dir={out}", "name=demo"],
        env=env_for(src),
        check=True,
        capture_output=True,
    )
    metrics = json.loads((out / "demo" / "metrics.json").read_text())
    return {"wall_s": time.perf_counter() - t0, "metrics": metrics}


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    diffs = []
    for name, row in before["test"].items():
        for key, value in row.items():
            if key.endswith(SKIP) or key.startswith("g_per") or key.startswith("wh_per"):
                continue
            if after["test"][name].get(key) != value:
                diffs.append(f"{name}.{key}: {value} -> {after['test'][name].get(key)}")
    curves = {k: before["training"][k] == after["training"][k] for k in ("loss_curve", "val_curve")}
    return {
        "models": sorted(before["test"]),
        "score_differences": diffs,
        "curves_equal": curves,
        "mape": {n: r["mape"] for n, r in after["test"].items()},
    }


def carbon_run(src: Path, out: Path) -> Path:
    """Trained by the older code: the newer reads its run directories, not the reverse (an
    older greentune refuses config keys it does not know, such as train.callbacks)."""
    cmd = [
        sys.executable,
        "-m",
        "greentune",
        "run",
        "data.source=csv",
        f"data.path={TRACE}",
        "data.time_col=Datetime (UTC)",
        "data.target=Carbon Intensity gCO₂eq/kWh (LCA)",
        "data.context_length=168",
        "data.horizon=48",
        "data.val=28D",
        "data.test=28D",
        "train.max_steps=50",
        "eval.baselines=[seasonal_naive_daily]",
        f"output_dir={out}",
        "name=carbon",
    ]
    subprocess.run(cmd, env=env_for(src), check=True, capture_output=True)
    return out / "carbon"


def time_forecaster(src: Path, run: Path, issues: int) -> tuple[float, float, float]:
    """(setup s, median s of one 168-slot forecast, mean MAPE) in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", FORECAST, str(run), str(TRACE), str(issues)],
        env=env_for(src),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"the forecaster failed with {src}:\n{done.stderr[-3000:]}")
    setup_s, seconds, mape = done.stdout.strip().splitlines()[-1].split()
    return float(setup_s), float(seconds), float(mape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", required=True, help="git revision before the API")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--issues", type=int, default=7, help="forecasts timed per process")
    parser.add_argument("--skip-run", action="store_true", help="only the carbon forecaster")
    parser.add_argument("--out", type=Path, default=RESULTS / "api_parity.json")
    args = parser.parse_args()
    result: dict[str, Any] = {"machine": machine_info(), "before": args.before}
    if args.skip_run and args.out.is_file():  # keep the parity check of an earlier call
        earlier = json.loads(args.out.read_text())
        if earlier.get("before") == args.before and "default_run" in earlier:
            result["default_run"] = earlier["default_run"]
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(old), args.before],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            if not args.skip_run:
                print("default run, code before the API ...", flush=True)
                b = default_run(old / "src", Path(tmp) / "runs-before")
                print("default run, this tree ...", flush=True)
                a = default_run(ROOT / "src", Path(tmp) / "runs-after")
                result["default_run"] = {
                    **compare(b["metrics"], a["metrics"]),
                    "wall_s": {"before": b["wall_s"], "after": a["wall_s"]},
                    "run_wh": {
                        "before": b["metrics"]["energy"]["run_wh"],
                        "after": a["metrics"]["energy"]["run_wh"],
                    },
                }
                print(json.dumps(result["default_run"], indent=1), flush=True)
            if TRACE.is_file():
                print("carbon run (MiniLM, 50 steps) ...", flush=True)
                run = carbon_run(old / "src", Path(tmp) / "carbon")
                times: dict[str, list[float]] = {"before": [], "after": []}
                setup: dict[str, list[float]] = {"before": [], "after": []}
                errors: dict[str, float] = {}
                for i in range(args.repeats):
                    for side, src in (("before", old / "src"), ("after", ROOT / "src")):
                        setup_s, seconds, mape = time_forecaster(src, run, args.issues)
                        times[side].append(seconds)
                        setup[side].append(setup_s)
                        errors[side] = mape
                        print(f"  repeat {i} {side}: {seconds:.3f} s a forecast", flush=True)
                med = {k: statistics.median(v) for k, v in times.items()}
                result["carbon_forecaster"] = {
                    "horizon_slots": 168,
                    "model_calls_per_forecast": 4,
                    "forecasts_per_process": args.issues,
                    "seconds_per_forecast": times,
                    "median_s": med,
                    "speedup": med["before"] / med["after"],
                    "setup_s_median": {k: statistics.median(v) for k, v in setup.items()},
                    "mean_mape": errors,
                }
                print(json.dumps(result["carbon_forecaster"], indent=1), flush=True)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
