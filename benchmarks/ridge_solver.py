"""The ridge start: its solver and its alpha grid, each against what it replaced, on the same
data, in the same process, 3 repeats each.

    .venv/bin/python benchmarks/ridge_solver.py [--sets vic2014,vic_elec,pjm,isone,etth1]
    .venv/bin/python benchmarks/ridge_solver.py --compare grid \
        --sets vic4w,vic8w,vic2014,vic_elec,pjm,isone

``--compare solver`` (default): sums from lagged cross-products and one Cholesky factor per
alpha for both designs, against the previous solver (sums as products of the design rows, and a
factor per alpha for each design, the window design's penalty scaled by its own X'X), both on
the grid of that time (1e-4 .. 1), alternating.

The new solver also changes one thing on purpose: the window design's penalty is scaled by the
raw design's mean diagonal (about 2 % larger on the demo) so that both designs share the
factor. The rule, set before the run: it is kept only if on every series the kept fit's
validation MSE is at most 0.5 % above the previous solver's (validation, never test). The test
MSE of both fits is written beside it, not used.

``--compare grid``: the alpha grid widened to 1e-6 .. 100 (the walk still starts at 1e-2)
against the grid of 1e-4 .. 1, both with today's solver and the same sums. The walk picks on
validation MSE, so the wider grid can only lower it; what is measured is what that buys on test
(MAPE, read once, after) and what the extra factors cost in time. vicNw are remedies.py's short
cuts of the demo (N weeks of training).

Writes benchmarks/results/ridge_solver[-grid].json and .md (median wall seconds, the alpha and
design each side kept, validation and test MSE in scaled units, test MAPE for the grid).
Measured wall time, no energy: the ridge runs on the CPU alone, so its modelled energy would
only restate the time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import linalg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import series
from machine import machine_info

from greentune.config import build_config, load_config
from greentune.data.windows import ForecastData, prepare_forecast_data
from greentune.evaluate.ridge import (
    LEVELS,
    RIDGE_ALPHAS,
    LinearFit,
    _centred,
    _LevelStep,
    complete_origins,
    design_matrix,
    ridge_statistics,
    solve_ridge,
    walk_alphas,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ETTH1 = ROOT / "configs" / "forecast" / "ett_h1.yaml"
REPEATS = 3
NEVER = 10**12  # lagged_from: every origin summed from its design row
OLD_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def previous_solve(stats: dict[str, np.ndarray]) -> LinearFit:
    """The solver before the lagged sums and the shared factor: each design its own penalty
    scale and its own Cholesky factor per alpha (the same walk and choice, the grid of then)."""
    raw = _centred(stats)
    step = _LevelStep.from_layout(stats["level_x"], stats["level_y"])
    best = None
    for level in LEVELS:
        c = raw if level == "raw" else step.apply(raw)
        scale = float(np.mean(np.diag(c.gram))) or 1.0
        fits: dict[int, tuple[float, np.ndarray]] = {}

        def val_error(i: int, c=c, scale=scale, fits=fits) -> float:
            if i not in fits:
                a = c.gram + OLD_GRID[i] * scale * np.eye(len(c.gram))
                w = linalg.cho_solve(linalg.cho_factor(a, check_finite=False), c.xty)
                sse = float(np.sum(w * (c.cxx @ w)) - 2 * np.sum(w * c.cxy) + c.cyy)
                fits[i] = (sse / (c.nv * w.shape[1]), w)
            return fits[i][0]

        i = walk_alphas(val_error, OLD_GRID)
        err, w = fits[i]
        if best is None or err < best[0]:
            best = (err, level, i, w if level == "raw" else step.to_raw(w))
    assert best is not None
    _, level, i, w = best
    return LinearFit(w, raw.xm, raw.ym, OLD_GRID[i], 0.0, level)


def mse(data: ForecastData, fit: LinearFit, origins: np.ndarray) -> float:
    x, y = design_matrix(data, complete_origins(data, origins))
    return float(np.mean((fit.predict_scaled(x.astype(np.float64)) - y) ** 2))


def measure(name: str, data: ForecastData) -> dict:
    runs: dict[str, dict[str, list[float]]] = {
        s: {"sums_s": [], "solve_s": []} for s in ("previous", "new")
    }
    fits: dict[str, LinearFit] = {}
    for r in range(REPEATS):
        order = ("previous", "new") if r % 2 == 0 else ("new", "previous")
        for solver in order:
            t0 = time.perf_counter()
            stats = ridge_statistics(data, lagged_from=NEVER if solver == "previous" else 256)
            t1 = time.perf_counter()
            if solver == "previous":
                fit = previous_solve(stats)
            else:
                fit = solve_ridge(stats, alphas=OLD_GRID)
            t2 = time.perf_counter()
            runs[solver]["sums_s"].append(t1 - t0)
            runs[solver]["solve_s"].append(t2 - t1)
            fits[solver] = fit
            del stats
            print(f"  {name:<14} {solver:<9} sums {t1 - t0:6.1f} s  solve {t2 - t1:6.1f} s")
    out: dict = {"width": int(fits["new"].weight.shape[0]), "solvers": {}}
    for solver, times in runs.items():
        fit = fits[solver]
        sums_s, solve_s = float(np.median(times["sums_s"])), float(np.median(times["solve_s"]))
        out["solvers"][solver] = {
            "sums_s": sums_s,
            "solve_s": solve_s,
            "total_s": float(np.median(np.add(times["sums_s"], times["solve_s"]))),
            "repeats": times,
            "alpha": fit.alpha,
            "design": fit.level,
            "val_mse": mse(data, fit, data.val.origins),
            "test_mse": mse(data, fit, data.test.origins),
        }
    p, n = out["solvers"]["previous"], out["solvers"]["new"]
    out["time_ratio"] = n["total_s"] / p["total_s"]
    out["val_mse_ratio"] = n["val_mse"] / p["val_mse"]
    out["max_weight_diff"] = float(np.abs(fits["new"].weight - fits["previous"].weight).max())
    return out


def test_mape(data: ForecastData, fit: LinearFit) -> float:
    """MAPE % of the fit on the test windows, in data units."""
    x, y = design_matrix(data, complete_origins(data, data.test.origins))
    n, t = len(x), 1 if data.channel_independent else data.n_targets
    pred = data.unscale_target(fit.predict_scaled(x.astype(np.float64)).reshape(n, -1, t))
    actual = data.unscale_target(y.reshape(n, -1, t).astype(np.float64))
    return float(np.mean(np.abs(pred - actual) / np.abs(actual)) * 100)


def measure_grid(name: str, data: ForecastData) -> dict:
    stats = ridge_statistics(data)
    seconds: dict[str, list[float]] = {"old": [], "wide": []}
    fits: dict[str, LinearFit] = {}
    for r in range(REPEATS):
        for grid in ("old", "wide") if r % 2 == 0 else ("wide", "old"):
            t0 = time.perf_counter()
            fits[grid] = solve_ridge(stats, alphas=OLD_GRID if grid == "old" else RIDGE_ALPHAS)
            seconds[grid].append(time.perf_counter() - t0)
            print(f"  {name:<14} {grid:<5} solve {seconds[grid][-1]:6.1f} s")
    out: dict = {"width": int(fits["wide"].weight.shape[0]), "grids": {}}
    for grid, fit in fits.items():
        out["grids"][grid] = {
            "solve_s": float(np.median(seconds[grid])),
            "repeats": seconds[grid],
            "alpha": fit.alpha,
            "design": fit.level,
            "val_mse": mse(data, fit, data.val.origins),
            "test_mse": mse(data, fit, data.test.origins),
            "test_mape": test_mape(data, fit),
        }
    o, w = out["grids"]["old"], out["grids"]["wide"]
    out["time_ratio"] = w["solve_s"] / o["solve_s"]
    out["val_mse_ratio"] = w["val_mse"] / o["val_mse"]
    return out


def datasets(sets: list[str]) -> dict[str, ForecastData]:
    from remedies import victoria_args

    out = {}
    for name in [s for s in sets if s.startswith("vic") and s.endswith("w")]:
        out[name] = prepare_forecast_data(
            build_config(overrides=victoria_args(int(name[3:-1]))).data
        )
    plain = [s for s in sets if s != "etth1" and not (s.startswith("vic") and s.endswith("w"))]
    for name, args in series(plain).items():
        if name.startswith(("pjm-", "isone-")) and name not in ("pjm-AEP", "isone-ME"):
            continue  # one of each family: their shapes are alike
        out[name] = prepare_forecast_data(build_config(overrides=args).data)
    if "etth1" in sets:
        out["etth1"] = prepare_forecast_data(load_config(ETTH1).data)
    return out


def markdown(results: dict) -> str:
    lines = [
        "| series | design width | previous: sums + solve (s) | new: sums + solve (s) | "
        "new / previous | kept (previous → new) | val MSE new / previous | test MSE prev → new |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["series"].items():
        p, n = r["solvers"]["previous"], r["solvers"]["new"]
        lines.append(
            f"| {name} | {r['width']:,} | {p['sums_s']:.1f} + {p['solve_s']:.1f} | "
            f"{n['sums_s']:.1f} + {n['solve_s']:.1f} | **{r['time_ratio']:.2f}** | "
            f"{p['design']} {p['alpha']:g} → {n['design']} {n['alpha']:g} | "
            f"{r['val_mse_ratio']:.4f} | {p['test_mse']:.5f} → {n['test_mse']:.5f} |"
        )
    return "\n".join(lines) + "\n"


def markdown_grid(results: dict) -> str:
    lines = [
        "| series | kept, 1e-4 .. 1 | kept, 1e-6 .. 100 | val MSE wide / old | test MSE old → wide "
        "| test MAPE % old → wide | solve s old → wide |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results["series"].items():
        o, w = r["grids"]["old"], r["grids"]["wide"]
        lines.append(
            f"| {name} | {o['design']} {o['alpha']:g} | {w['design']} {w['alpha']:g} | "
            f"{r['val_mse_ratio']:.4f} | {o['test_mse']:.5f} → {w['test_mse']:.5f} | "
            f"{o['test_mape']:.3f} → **{w['test_mape']:.3f}** | "
            f"{o['solve_s']:.1f} → {w['solve_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="vic2014,vic_elec,pjm,isone,etth1")
    ap.add_argument("--compare", choices=("solver", "grid"), default="solver")
    a = ap.parse_args()
    grid = a.compare == "grid"
    one, table = (measure_grid, markdown_grid) if grid else (measure, markdown)
    results: dict = {"machine": machine_info(), "repeats": REPEATS, "series": {}}
    for name, data in datasets(a.sets.split(",")).items():
        results["series"][name] = one(name, data)
    if not grid:
        ratios = [r["val_mse_ratio"] for r in results["series"].values()]
        results["rule_kept"] = all(v <= 1.005 for v in ratios)
    stem = RESULTS / ("ridge_solver-grid" if grid else "ridge_solver")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str))
    stem.with_suffix(".md").write_text(table(results))
    print(table(results))
    if not grid:
        print("rule (val MSE <= 1.005x previous on every series):", results["rule_kept"])


if __name__ == "__main__":
    main()
