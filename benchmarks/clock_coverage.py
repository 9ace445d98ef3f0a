"""Does the network forecast better from the clock times its training windows start at?

The default stride keeps about 3,000 training windows; a stride that shares a factor with the
steps per day starts them at a few clock times only (stride 8 on hourly data: three; on
half-hours: six), while validation forecasts from eight clock times a day and the test from
midnight. If that aliasing cost accuracy, the network (a residual over the ridge, which is fitted
on windows from every clock time) would fall behind the ridge more at the validation clock times
it never trained from. Restated from saved default runs (``combine.py``'s), nothing retrained:

- the clock times of the run's training origins (its data rebuilt from its own config);
- per validation origin clock time, the network's MAPE over the ridge's (``linear``);
- per run, the median of that ratio at trained clock times over its median at untrained ones
  (below 1: the network is relatively better where it trained).

    .venv/bin/python benchmarks/clock_coverage.py [--series pjm,isone,vic_elec] [--seeds 0]

Writes benchmarks/results/clock-coverage.json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from combine import RESULTS, run_dir, series, write
from machine import git_commit, machine_info

from greentune.data.windows import prepare_forecast_data
from greentune.rundir import RunDir


def score(path: Path) -> dict[str, Any]:
    run = RunDir(path)
    cfg = run.config
    data = prepare_forecast_data(cfg.data)
    trained = set(pd.DatetimeIndex(data.frame.index[data.train.origins]).time)
    val = run.validation_predictions
    network = next(m for m in val["model"].unique() if m.startswith("minilm"))
    val = val[val["model"].isin([network, "linear"])].copy()
    val["ape"] = (val["y_pred"] - val["y_true"]).abs() / val["y_true"].abs()
    val["clock"] = pd.to_datetime(val["origin"]).dt.time
    by = val.pivot_table(index="clock", columns="model", values="ape", aggfunc="mean")
    ratio = by[network] / by["linear"]
    inside = [float(r) for c, r in ratio.items() if c in trained]
    outside = [float(r) for c, r in ratio.items() if c not in trained]
    return {
        "train_stride": cfg.data.train_stride,
        "trained_clock_times": len(trained),
        "validation_clock_times": len(ratio),
        "ratio_by_clock": {str(c): float(r) for c, r in ratio.items()},
        "trained": sorted(str(c) for c in ratio.index if c in trained),
        "relative": (
            statistics.median(inside) / statistics.median(outside) if inside and outside else None
        ),
    }


def markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [
        "# The network against the ridge, by the clock time of the validation origin",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores. Commit {result['commit']}. "
        "Ratio = the network's validation MAPE / the ridge's (`linear`), per origin clock time; "
        "relative = median ratio at trained clock times / median at the others.",
        "",
        "| run | stride | clock times trained (of the day) | validation times trained | "
        "ratio, trained | ratio, not trained | relative |",
        "|---|---|---|---|---|---|---|",
    ]
    rel = []
    for key, row in result["series"].items():
        r = row["ratio_by_clock"]
        inside = [v for c, v in r.items() if c in row["trained"]]
        outside = [v for c, v in r.items() if c not in row["trained"]]
        cell = lambda v: f"{statistics.median(v):.3f}" if v else "-"  # noqa: E731
        relative = row["relative"]
        if relative is not None:
            rel.append(relative)
        lines.append(
            f"| {key} | {row['train_stride']} | {row['trained_clock_times']} | "
            f"{len(inside)} of {row['validation_clock_times']} | {cell(inside)} | "
            f"{cell(outside)} | {'-' if relative is None else f'{relative:.3f}'} |"
        )
    if rel:
        lines.append(
            f"| **median relative** (below 1) | | | | | | **{statistics.median(rel):.3f}** "
            f"({sum(v < 1 for v in rel)}/{len(rel)}) |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--series", default="pjm,isone,vic_elec")
    p.add_argument("--seeds", default="0")
    p.add_argument("--tag", default="")
    a = p.parse_args()
    out: dict[str, Any] = {"machine": machine_info(), "commit": git_commit(), "series": {}}
    for label, overrides in series(a.series.split(",")).items():
        for seed in (int(s) for s in a.seeds.split(",")):
            out["series"][f"{label}/s{seed}"] = score(run_dir(label, overrides, seed))
            print(f"[{label}/s{seed}] scored", flush=True)
    write(RESULTS / f"clock-coverage{'-' + a.tag if a.tag else ''}", out, markdown)


if __name__ == "__main__":
    main()
