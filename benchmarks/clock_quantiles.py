"""A served baseline's quantiles at any clock time: offsets calibrated at the origin's own clock
time against those of the test's midnight origins.

A run scores its test windows from local midnight, and each baseline calibrates its quantiles
(residual quantiles per horizon step) on the windows that start at the same clock time (night
load is calmer: a step's spread depends on its time of day). Kept in ``rows/`` with those
offsets only, a row served from another clock time (``origins=last`` at 14:00) adds midnight's
offsets step by step. This script measures what calibrating at each origin's clock time instead
would give, with the product's own baselines (``run_baseline``):

- for each default run (benchmarks/combine.py's, reused) and each of ``linear``, ``lightgbm``
  and ``seasonal_naive_daily``: the point forecast of every test origin at every clock time
  (stride 1; the run's fits, refitted deterministically from its config);
- ``midnight``: the offsets calibrated at the first midnight test origin (recomputed with
  ``run_baseline``: the baselines are deterministic, so these are the offsets the run kept)
  added to every origin, as ``rows/`` serves them; ``clock``: the offsets calibrated at each
  origin's clock time (the alternative; not adopted, see benchmarks/README.md);
- scored on the origins that are not at midnight (where the two differ): coverage of the
  [q0.1, q0.9] interval (nominal 80 %) and the mean pinball loss over the run's levels.

    .venv/bin/python benchmarks/clock_quantiles.py [--series pjm,isone,vic_elec] [--seeds 0]

Writes benchmarks/results/clock-quantiles.json and .md.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from combine import restate

from greentune.data.windows import prepare_forecast_data
from greentune.evaluate.baselines import horizon_positions, run_baseline
from greentune.rundir import RunDir

ROWS = ("linear", "lightgbm", "seasonal_naive_daily")


def _pinball(y: np.ndarray, q: dict[float, np.ndarray]) -> float:
    losses = []
    for level, pred in q.items():
        d = y - pred
        losses.append(np.nanmean(np.maximum(level * d, (level - 1) * d)))
    return float(np.mean(losses))


def score(path: Path) -> dict[str, Any]:
    run = RunDir(path)
    cfg = run.config
    data = prepare_forecast_data(cfg.data)
    levels = tuple(float(q) for q in cfg.model.quantiles)
    H = data.horizon
    idx = data.frame.index
    minute = np.asarray(idx.hour * 60 + idx.minute)
    start = int(data.test.origins.min())
    origins = np.arange(start, len(idx) - H + 1)
    off_midnight = origins[minute[origins] != 0]
    y = data.target_values()[horizon_positions(off_midnight, H)]
    out: dict[str, Any] = {"origins": len(off_midnight), "levels": list(levels)}
    lo, hi = min(levels), max(levels)
    for name in ROWS:
        if name not in cfg.eval.baselines:
            continue
        point = run_baseline(name, data, off_midnight).point
        first = {m: int(origins[minute[origins] == m][0]) for m in np.unique(minute[origins])}
        offsets = {}
        for m, o in first.items():
            fc = run_baseline(name, data, np.array([o]), levels)
            assert fc.quantiles is not None
            offsets[m] = {q: fc.quantiles[q][0] - fc.point[0] for q in levels}
        arms = {
            "midnight": {q: point + offsets[0][q][None] for q in levels},
            "clock": {
                q: point + np.stack([offsets[int(m)][q] for m in minute[off_midnight]])
                for q in levels
            },
        }
        out[name] = {
            arm: {
                "coverage": float(np.nanmean((y >= q[lo]) & (y <= q[hi]))),
                "pinball": _pinball(y, q),
            }
            for arm, q in arms.items()
        }
        r = out[name]
        ratio = r["clock"]["pinball"] / r["midnight"]["pinball"]
        print(
            f"  {path.name} {name}: coverage {r['midnight']['coverage']:.3f} -> "
            f"{r['clock']['coverage']:.3f}, pinball {ratio:.3f}x",
            flush=True,
        )
    return out


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    series = result["series"]
    lines = [
        "# A served baseline's quantiles: offsets at the origin's clock time vs midnight's",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores. Commit {result['commit']}. Test origins "
        "not at midnight, every step; nominal coverage of [q0.1, q0.9] 80 %.",
        "",
        "| row | series | coverage midnight / clock: median [range] | pinball clock / midnight: "
        "median [range] | better pinball |",
        "|---|---|---|---|---|",
    ]
    for name in ROWS:
        for group in ("pjm", "isone", "vic_elec", "all"):
            rows = [
                r[name]
                for k, r in series.items()
                if name in r and (group == "all" or k.startswith(group))
            ]
            if not rows:
                continue
            cm = [r["midnight"]["coverage"] for r in rows]
            cc = [r["clock"]["coverage"] for r in rows]
            ratio = [r["clock"]["pinball"] / r["midnight"]["pinball"] for r in rows]
            lines.append(
                f"| {name} | {group} ({len(rows)}) | {statistics.median(cm):.3f} / "
                f"{statistics.median(cc):.3f} [{min(cc):.3f}-{max(cc):.3f}] | "
                f"{statistics.median(ratio):.3f} [{min(ratio):.3f}-{max(ratio):.3f}] | "
                f"{sum(x < 1 for x in ratio)} / {len(ratio)} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    restate("clock-quantiles", __doc__ or "", score, markdown)


if __name__ == "__main__":
    main()
