"""Training windows that start at the test's clock time (``data.train_phase``), on files that
start at another hour.

The default stride (about 3,000 training windows: 8 on three years of hours) starts the
network's training windows at a few clock times only, counted from the file's first window. The
PJM files start at midnight, so those times (0, 8, 16 h) include the test's (daily origins at
midnight). A file that starts at 04:00 trains from 4, 12 and 20 h instead. ``data.train_phase:
test`` counts the stride from the test's first origin (the same number of windows).

Pre-registered (benchmarks/README.md, "Training windows at the test's clock time"). Data: the
9 PJM utilities' 3-year window (``federated.prepare(3 * 365)``, ``combine._pjm``'s settings),
each file without its first ``--drop`` rows (4: it starts at 04:00). Per seed, arms alternating
(A,B / B,A / ...): A = one default ``greentune run`` per utility with ``data.train_phase=start``
(the default when it ran, at a890f42); B = the same with ``data.train_phase=test`` (the default
since, by this study's rule). Per utility, from each run's ``predictions.parquet`` and
``validation.parquet``: MAPE of the recommended row (chosen on validation), the network (test
and validation), LightGBM; energy modelled.

    .venv/bin/python benchmarks/train_phase.py [--seeds 0,1,2] [--drop 4] [--tag NAME]

Writes benchmarks/results/train-phase[-TAG].json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from combine import RESULTS, RUNS, _pjm, run_dir, write
from federated import prepare
from global_series import _bill, per_target
from machine import git_commit, machine_info

from greentune.rundir import RunDir

ARMS = {"A": ["data.train_phase=start"], "B": ["data.train_phase=test"]}
"""Each arm's setting (A was the default when the study ran; B has been since)."""


def shifted(drop: int) -> dict[str, Path]:
    """The utilities' files without their first ``drop`` rows."""
    out = RUNS / f"phase-data-drop{drop}"
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for csv in sorted(prepare(3 * 365).glob("*.csv")):
        path = out / csv.name
        if not path.is_file():
            pd.read_csv(csv).iloc[drop:].to_csv(path, index=False)
        files[csv.stem] = path
    return files


def one_arm(arm: str, seed: int, files: dict[str, Path], prefix: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    runs = {
        u: run_dir(u, _pjm(p), seed, prefix=f"{prefix}{arm}", extra=tuple(ARMS[arm]))
        for u, p in files.items()
    }
    out: dict[str, Any] = {"wall_s": time.perf_counter() - t0, "utilities": {}}
    for u, path in runs.items():
        run = RunDir(path)
        data = run.config.data
        wh, train_wh = _bill(path)
        out["utilities"][u] = {
            **per_target(path)["load_mw"],
            "recommended_row": run.metrics.energy.greenest if run.metrics.energy else None,
            "train_phase": data.train_phase,
            "train_stride": data.train_stride,
            "wh": wh,
            "train_wh": train_wh,
        }
    return out


def summary(seeds: dict[int, dict[str, Any]]) -> dict[str, Any]:
    utilities = list(next(iter(seeds.values()))["A"]["utilities"])

    def ratios(key: str) -> dict[str, float]:
        return {
            u: statistics.median(
                s["B"]["utilities"][u][key] / s["A"]["utilities"][u][key] for s in seeds.values()
            )
            for u in utilities
        }

    out: dict[str, Any] = {}
    for key in ("network", "recommended", "network_val", "lightgbm", "wh"):
        r = ratios(key)
        out[key] = {
            "by_utility": r,
            "median": statistics.median(r.values()),
            "below_one": sum(v < 1 for v in r.values()),
        }
    net, rec = out["network"], out["recommended"]
    out["adopted"] = bool(net["median"] < 1.0 and net["below_one"] >= 6 and rec["median"] <= 1.0)
    return out


def markdown(result: dict[str, Any]) -> str:
    machine, s = result["machine"], result["summary"]
    seeds = result["seeds"]
    lines = [
        "# Training windows at the test's clock time (`data.train_phase: test`)",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores. Commit {result['commit']}. "
        f"The 9 PJM utilities, 3 years of hours, each file without its first {result['drop']} "
        f"rows; seeds {', '.join(map(str, seeds))}. Ratios B / A (B: `data.train_phase=test`), "
        "median over seeds; energy modelled.",
        "",
        "| utility | network test MAPE A → B | ratio | network val ratio | recommended A → B "
        "| ratio | LightGBM ratio | Wh ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def med(arm: str, u: str, key: str) -> float:
        return statistics.median(v[arm]["utilities"][u][key] for v in seeds.values())

    for u in s["network"]["by_utility"]:
        lines.append(
            f"| {u} | {med('A', u, 'network'):.3f} → {med('B', u, 'network'):.3f} | "
            f"{s['network']['by_utility'][u]:.4f} | {s['network_val']['by_utility'][u]:.4f} | "
            f"{med('A', u, 'recommended'):.3f} → {med('B', u, 'recommended'):.3f} | "
            f"{s['recommended']['by_utility'][u]:.4f} | {s['lightgbm']['by_utility'][u]:.4f} | "
            f"{s['wh']['by_utility'][u]:.3f} |"
        )
    cell = lambda k: f"**{s[k]['median']:.4f}** ({s[k]['below_one']}/9)"  # noqa: E731
    lines += [
        f"| **median** (below 1) | | {cell('network')} | {cell('network_val')} | | "
        f"{cell('recommended')} | {cell('lightgbm')} | {cell('wh')} |",
        "",
        f"Rule (written before the runs): adopt if the network's median ratio < 1.00 and below 1 "
        f"on >= 6 of 9, and the recommended row's median ratio <= 1.00: "
        f"**{'met' if s['adopted'] else 'not met'}**.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--drop", type=int, default=4)
    p.add_argument("--tag", default="")
    a = p.parse_args()
    files = shifted(a.drop)
    prefix = f"phase{a.drop}" + (f"-{a.tag}" if a.tag else "")
    seeds: dict[int, dict[str, Any]] = {}
    for i, seed in enumerate(int(s) for s in a.seeds.split(",")):
        order = ("A", "B") if i % 2 == 0 else ("B", "A")
        seeds[seed] = {arm: one_arm(arm, seed, files, prefix) for arm in order}
    result = {
        "machine": machine_info(),
        "commit": git_commit(),
        "drop": a.drop,
        "seeds": seeds,
        "summary": summary(seeds),
    }
    write(RESULTS / f"train-phase{'-' + a.tag if a.tag else ''}", result, markdown)


if __name__ == "__main__":
    main()
