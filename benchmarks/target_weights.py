"""One model over many series: should its weighted ensemble fit weights per series?

On channel-independent data (``data.series_col`` + ``data.channel_independent``: one network and
one ridge shared by the series of a long file) the weighted ensemble fits one weight set per
horizon step for all series together, on their raw values, so the largest series weigh most;
one run per series fits its own. Two rules, restated from the saved validation and test
forecasts of one-model runs (``validation.parquet``, ``predictions.parquet``), nothing retrained:

- ``shared``: per step, every series' windows together (the product's rule; checked against the
  run's own ``ensemble-weighted`` row);
- ``target``: per step and per series, on that series' validation windows only.

    .venv/bin/python benchmarks/target_weights.py [--runs globalone-ci-default-pjm9] [--seeds 0,1,2]
        [--tag NAME]

``--runs`` names run directories in benchmarks/results/runs without the ``-sSEED`` suffix
(comma-separated: each is one arm); stop 62's ``global_series.py`` made them. Per series: the
weighted ensemble's test MAPE under each rule, the ratio ``target`` / ``shared``, median over
seeds. Pre-registered (benchmarks/README.md, "One model across the PJM utilities"). Writes
benchmarks/results/target-weights[-TAG].json and .md.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from combine import RESULTS, RUNS, mape, saved, write
from machine import git_commit, machine_info

from greentune.evaluate.ensemble import fit_weights
from greentune.results import Forecast


def _weights_shared(val: dict[str, np.ndarray], y: np.ndarray) -> np.ndarray:
    """(H, M, T): the same weights for every target."""
    w = fit_weights({m: Forecast(f) for m, f in val.items()}, y)
    return np.repeat(w[:, :, None], y.shape[2], axis=2)


def _weights_target(val: dict[str, np.ndarray], y: np.ndarray) -> np.ndarray:
    return np.stack(
        [
            fit_weights({m: Forecast(f[:, :, [t]]) for m, f in val.items()}, y[:, :, [t]])
            for t in range(y.shape[2])
        ],
        axis=2,
    )


RULES = {"shared": _weights_shared, "target": _weights_target}


def score(path: Path) -> dict[str, Any]:
    """Per target: the weighted ensemble's test MAPE under each rule."""
    got = saved(path)
    metrics, members, names = got.metrics, got.members, got.names
    val, y_val, test, y_test = got.val, got.y_val, got.test, got.y_test
    targets = sorted(got.test_frame["target"].unique())  # arrays' order
    stacked = np.stack([test[m] for m in names])
    out: dict[str, Any] = {"members": members, "targets": {}}
    points = {}
    for rule, fit in RULES.items():
        w = fit({m: val[m] for m in names}, y_val)
        points[rule] = np.einsum("mnht,hmt->nht", stacked, w)
    pooled = mape(y_test, points["shared"])
    own = metrics["test"]["ensemble-weighted"]["mape"]
    if not math.isclose(pooled, own, rel_tol=1e-6):
        raise SystemExit(f"{path}: shared restates {pooled} against {own}")
    for t, target in enumerate(targets):
        out["targets"][str(target)] = {
            rule: mape(y_test[:, :, t], p[:, :, t]) for rule, p in points.items()
        }
    out["pooled"] = {rule: mape(y_test, p) for rule, p in points.items()}
    return out


def summary(arms: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    out = {}
    for arm, seeds in arms.items():
        targets = list(next(iter(seeds.values()))["targets"])
        ratios = {
            t: statistics.median(
                s["targets"][t]["target"] / s["targets"][t]["shared"] for s in seeds.values()
            )
            for t in targets
        }
        values = list(ratios.values())
        out[arm] = {
            "ratio_by_target": ratios,
            "median_ratio": statistics.median(values),
            "below_one": sum(v < 1 for v in values),
            "targets": len(values),
            "pooled_ratio_by_seed": {
                str(k): s["pooled"]["target"] / s["pooled"]["shared"] for k, s in seeds.items()
            },
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [
        "# The weighted ensemble of one model over many series: weights per series",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores. Commit {result['commit']}. "
        "Restated from saved forecasts; weights fitted on validation only. Test MAPE % of "
        "`ensemble-weighted`, median over seeds; ratio = `target` / `shared`.",
        "",
    ]
    for arm, seeds in result["arms"].items():
        s = result["summary"][arm]
        lines += [
            f"## {arm} (seeds {', '.join(str(k) for k in seeds)})",
            "",
            "| series | shared | target | ratio |",
            "|---|---|---|---|",
        ]
        for t, ratio in s["ratio_by_target"].items():
            shared = statistics.median(v["targets"][t]["shared"] for v in seeds.values())
            own = statistics.median(v["targets"][t]["target"] for v in seeds.values())
            lines.append(f"| {t} | {shared:.3f} | {own:.3f} | {ratio:.4f} |")
        pooled = ", ".join(f"{v:.4f}" for v in s["pooled_ratio_by_seed"].values())
        lines += [
            f"| **median ratio** (below 1) | | | **{s['median_ratio']:.4f}** "
            f"({s['below_one']}/{s['targets']}) |",
            "",
            f"Pooled MAPE ratio per seed: {pooled}.",
            "",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--runs", default="globalone-ci-default-pjm9,globalone-ci-budget-pjm9")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tag", default="")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    arms: dict[str, dict[int, dict[str, Any]]] = {}
    for prefix in a.runs.split(","):
        arms[prefix] = {}
        for seed in seeds:
            path = RUNS / f"{prefix}-s{seed}"
            if not (path / "metrics.json").is_file():
                raise SystemExit(f"{path}: no finished run (make it with global_series.py)")
            arms[prefix][seed] = score(path)
    result = {
        "machine": machine_info(),
        "commit": git_commit(),
        "arms": arms,
        "summary": summary(arms),
    }
    write(RESULTS / f"target-weights{'-' + a.tag if a.tag else ''}", result, markdown)


if __name__ == "__main__":
    main()
