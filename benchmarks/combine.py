"""How should a run's weighted ensemble fit its weights? Rules compared on other data first.

The weighted ensemble fits convex weights (NNLS, scaled to sum to one) on the validation windows,
one set per horizon step. With a few dozen validation origins per step, per-step weights may
chase noise. Every rule below is fitted on the same validation forecasts and scored on test:

- ``step``: per horizon step (the product's rule at the time of writing);
- ``pooled``: one set for all steps;
- ``shrunk``: the mean of ``step``'s and ``pooled``'s weights;
- ``band``: per step, fitted on the steps within +-2 of it;
- ``relative`` / ``relative-pooled``: as ``step`` / ``pooled`` with each row divided by |y|
  (squared relative error, which MAPE follows);
- ``recent`` / ``recent-relative``: as ``step`` / ``relative`` with validation origin i of n
  (0 the oldest) weighted 0.5 ** ((n - 1 - i) / (n / 2)): the windows nearest the test count more;
- ``origin`` / ``origin-band``: as ``step`` / ``band``, fitted only on the validation origins at
  the test origins' clock time (local midnight for daily test origins): step h then means the
  same clock time in the fit as on test;
- ``origin-shrunk``: the mean of ``step``'s and ``origin``'s weights.

Each series is one default ``greentune run`` (its network, baselines and ensembles; kept in
benchmarks/results/runs/combine-SERIES-sSEED and reused when finished); the rules are restated
from its saved validation and test forecasts (``validation.parquet``, ``predictions.parquet``),
and ``step`` is checked against the run's own ``ensemble-weighted`` row. Also reported: the row
the run recommended, and LightGBM's MAPE (the issue's anchor).

    .venv/bin/python benchmarks/combine.py [--series pjm,isone] [--seeds 0] [--tag NAME]

Series: pjm (the 9 PJM utilities, last 3 years, hourly), pjm-short (the same utilities, the 12
weeks ending 3 years + 1 day before: short series), isone (the 8 ISO-NE zones, Jan-Apr
2017, hourly, temperature and dew point), vic_elec (Victoria 2012-14, 92-day validation and
test, as benchmarks/victoria.py). Writes benchmarks/results/combine[-TAG].json and .md.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import isone_series
from federated import prepare
from machine import git_commit, machine_info
from victoria import DATASETS as VICTORIA

import greentune as gt
from greentune.config import load_config
from greentune.evaluate.ensemble import fit_weights
from greentune.results import Forecast
from greentune.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = RESULTS / "runs"
BAND = 2
"""``band``'s half-width in steps."""


def series(names: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if "pjm" in names:
        for csv in sorted(prepare(3 * 365).glob("*.csv")):
            out[f"pjm-{csv.stem}"] = _pjm(csv)
    if "isone" in names:
        out.update(isone_series())
    if "vic_elec" in names:
        out["vic_elec"] = [*VICTORIA["vic_elec"], "energy.carbon=static:AU"]
    if "pjm-short" in names:  # 12 weeks ending before the 3-year window: rows no pjm run read
        for csv in sorted(prepare(84, skip_days=3 * 365 + 1).glob("*.csv")):
            out[f"pjm12w-{csv.stem}"] = _pjm(csv)
    unknown = set(names) - {"pjm", "isone", "vic_elec", "pjm-short"}
    if unknown:
        raise SystemExit(f"--series: unknown {', '.join(sorted(unknown))}")
    return out


def _pjm(csv: Path) -> list[str]:
    """A PJM utility's file, hourly load with US holidays, gaps filled."""
    return [
        "data.source=csv",
        f"data.path={csv}",
        "data.time_col=time",
        "data.target=load_mw",
        "data.country=US",
        "data.fill_gaps=true",
    ]


def run_dir(
    label: str,
    overrides: list[str],
    seed: int,
    prefix: str = "combine",
    extra: tuple[str, ...] = (),
) -> Path:
    """The series' default run (reused when it finished); ``extra`` settings make another."""
    name = f"{prefix}-{label}-s{seed}"
    path = RUNS / name
    if (path / "validation.parquet").is_file() and (path / "metrics.json").is_file():
        print(f"[{name}] reused", flush=True)
        return path
    shutil.rmtree(path, ignore_errors=True)  # a run that did not finish
    cfg = load_config(
        None,
        [
            *overrides,
            *extra,
            f"seed={seed}",
            "eval.report=false",
            f"output_dir={RUNS}",
            f"name={name}",
        ],
    )
    t0 = time.perf_counter()
    run = gt.run(cfg, echo=lambda m: print(f"  [{name}] {m}", flush=True))
    print(f"[{name}] {time.perf_counter() - t0:.0f} s", flush=True)
    return run.path


def arrays(frame: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each row's point forecasts (N, H, T) and the observed values, from a predictions file."""
    frame = frame.sort_values(["model", "origin", "step", "target"])
    n, h = frame["origin"].nunique(), frame["step"].nunique()
    t = frame["target"].nunique()
    out, y, keys = {}, None, None
    for model, part in frame.groupby("model", sort=False):
        own = part[["origin", "step", "target"]].to_numpy()
        if keys is None:
            keys = own
        elif own.shape != keys.shape or not (own == keys).all():
            raise SystemExit(f"{model}: forecasts other windows than {frame['model'].iloc[0]}")
        out[str(model)] = part["y_pred"].to_numpy(float).reshape(n, h, t)
        y = part["y_true"].to_numpy(float).reshape(n, h, t) if y is None else y
    assert y is not None
    return out, y


def clock_matched(val: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """Which validation origins (sorted, as ``arrays`` orders them) start at a clock time the
    test's origins start at."""
    times = set(pd.to_datetime(pd.Series(test["origin"].unique())).dt.time)
    origins = pd.to_datetime(pd.Series(np.sort(val["origin"].unique())))
    return origins.dt.time.isin(times).to_numpy()


def _scaled(val: dict[str, np.ndarray], y: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    scale = np.where(np.abs(y) > 0, 1.0 / np.abs(y), np.nan)
    return {m: f * scale for m, f in val.items()}, y * scale


def _recent(val: dict[str, np.ndarray], y: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Rows scaled by the square root of their recency weight (weighted least squares)."""
    n = y.shape[0]
    root = np.sqrt(0.5 ** ((n - 1 - np.arange(n)) / (n / 2)))[:, None, None]
    return {m: f * root for m, f in val.items()}, y * root


def _pooled(val: dict[str, np.ndarray], y: np.ndarray) -> np.ndarray:
    """One weight set for every step: the steps stacked as if one."""
    n, h, t = y.shape
    flat = {m: Forecast(f.transpose(0, 2, 1).reshape(n * t * h, 1, 1)) for m, f in val.items()}
    w = fit_weights(flat, y.transpose(0, 2, 1).reshape(n * t * h, 1, 1))
    return np.repeat(w, h, axis=0)


def _step(val: dict[str, np.ndarray], y: np.ndarray) -> np.ndarray:
    return fit_weights({m: Forecast(f) for m, f in val.items()}, y)


def _matched(
    val: dict[str, np.ndarray], y: np.ndarray, mask: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    return {m: f[mask] for m, f in val.items()}, y[mask]


def _band(val: dict[str, np.ndarray], y: np.ndarray) -> np.ndarray:
    h = y.shape[1]
    rows = []
    for s in range(h):
        near = slice(max(0, s - BAND), min(h, s + BAND + 1))
        rows.append(_pooled({m: f[:, near] for m, f in val.items()}, y[:, near])[0])
    return np.stack(rows)


Rule = Callable[[dict[str, np.ndarray], np.ndarray, np.ndarray], np.ndarray]
"""(validation forecasts, observed, the clock-matched origins' mask) -> weights (H, M)."""
RULES: dict[str, Rule] = {
    "step": lambda v, y, _: _step(v, y),
    "pooled": lambda v, y, _: _pooled(v, y),
    "shrunk": lambda v, y, _: (_step(v, y) + _pooled(v, y)) / 2,
    "band": lambda v, y, _: _band(v, y),
    "relative": lambda v, y, _: _step(*_scaled(v, y)),
    "relative-pooled": lambda v, y, _: _pooled(*_scaled(v, y)),
    "recent": lambda v, y, _: _step(*_recent(v, y)),
    "recent-relative": lambda v, y, _: _step(*_recent(*_scaled(v, y))),
    "origin": lambda v, y, m: _step(*_matched(v, y, m)),
    "origin-band": lambda v, y, m: _band(*_matched(v, y, m)),
    "origin-shrunk": lambda v, y, m: (_step(v, y) + _step(*_matched(v, y, m))) / 2,
}


def mape(y: np.ndarray, yhat: np.ndarray) -> float:
    ok = np.isfinite(y) & (np.abs(y) > 0)
    return float(np.mean(np.abs((yhat[ok] - y[ok]) / y[ok])) * 100)


@dataclass
class Saved:
    """A run's weighted-ensemble members and their saved forecasts, as ``arrays`` lays them."""

    metrics: dict[str, Any]
    members: list[str]
    """As metrics.json names them ("model" for the network)."""
    names: list[str]
    """As the forecasts files name them."""
    val_frame: pd.DataFrame
    test_frame: pd.DataFrame
    val: dict[str, np.ndarray]
    y_val: np.ndarray
    test: dict[str, np.ndarray]
    y_test: np.ndarray


def saved(path: Path) -> Saved:
    run = RunDir(path)
    metrics = json.loads((path / "metrics.json").read_text())
    members = metrics["ensembles"]["ensemble-weighted"]["members"]
    names = [metrics["model"] if m == "model" else m for m in members]
    val_frame, test_frame = run.validation_predictions, run.predictions
    val, y_val = arrays(val_frame)
    test, y_test = arrays(test_frame)
    return Saved(metrics, members, names, val_frame, test_frame, val, y_val, test, y_test)


def score(path: Path) -> dict[str, Any]:
    got = saved(path)
    metrics, members, names = got.metrics, got.members, got.names
    val, y_val, test, y_test = got.val, got.y_val, got.test, got.y_test
    mask = clock_matched(got.val_frame, got.test_frame)
    val = {m: val[m] for m in names}
    test = {m: test[m] for m in names}
    rules: dict[str, Any] = {}
    for rule, fit in RULES.items():
        w = fit(val, y_val, mask)
        point = np.einsum("mnht,hm->nht", np.stack([test[m] for m in names]), w)
        rules[rule] = {
            "test_mape": mape(y_test, point),
            "weights_mean": dict(zip(members, np.round(w.mean(axis=0), 4).tolist(), strict=True)),
        }
    own = metrics["test"]["ensemble-weighted"]["mape"]
    if not math.isclose(rules["step"]["test_mape"], own, rel_tol=1e-6):
        raise SystemExit(f"{path}: step restates {rules['step']['test_mape']} against {own}")
    greenest = (metrics.get("energy") or {}).get("greenest")
    return {
        "members": members,
        "validation_origins": int(y_val.shape[0]),
        "validation_origins_matched": int(mask.sum()),
        "horizon": int(y_val.shape[1]),
        "rules": rules,
        "recommended": greenest,
        "recommended_test_mape": metrics["test"][greenest]["mape"] if greenest else None,
        "lightgbm_test_mape": metrics["test"].get("lightgbm", {}).get("mape"),
        "mean_test_mape": metrics["test"].get("ensemble-mean", {}).get("mape"),
    }


def markdown(result: dict) -> str:
    machine = result["machine"]
    lines = [
        "# Weighted-ensemble rules, restated from default runs",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores. Commit {result['commit']}. "
        "Test MAPE %; ratio = the rule's test MAPE / `step`'s (the product's rule). Weights "
        "fitted on validation only.",
        "",
        "| series | seed | origins (val; at the test's clock time) | "
        + " | ".join(RULES)
        + " | recommended | LightGBM |",
        "|---|---|---|" + "---|" * (len(RULES) + 2),
    ]
    ratios: dict[str, list[float]] = {r: [] for r in RULES}
    for key, row in result["series"].items():
        label, seed = key.rsplit("/s", 1)
        base = row["rules"]["step"]["test_mape"]
        cells = []
        for r in RULES:
            v = row["rules"][r]["test_mape"]
            ratios[r].append(v / base)
            cells.append(f"{v:.3f}" if r == "step" else f"{v:.3f} ({v / base:.3f})")
        rec = (
            f"{row['recommended']} {row['recommended_test_mape']:.3f}"
            if row["recommended"]
            else "-"
        )
        lgbm = row["lightgbm_test_mape"]
        lgbm_cell = f"{lgbm:.3f}" if lgbm is not None else "-"
        origins = f"{row['validation_origins']} ({row.get('validation_origins_matched', '-')})"
        lines.append(
            f"| {label} | {seed} | {origins} | {' | '.join(cells)} | {rec} | {lgbm_cell} |"
        )
    lines.append(
        "| **median ratio** (rows below 1) | | | "
        + " | ".join(
            f"{statistics.median(v):.4f} ({sum(x < 1 for x in v)}/{len(v)})"
            for v in ratios.values()
        )
        + " | | |"
    )
    return "\n".join(lines) + "\n"


def restate(
    name: str,
    doc: str,
    score_run: Callable[[Path], dict[str, Any]],
    render: Callable[[dict], str],
) -> None:
    """The command line of a study restated from default runs (this one, refit.py):
    ``--series``, ``--seeds``, ``--tag``; writes results/NAME[-TAG].json and .md."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--series", default="pjm,isone")
    p.add_argument("--seeds", default="0")
    p.add_argument("--tag", default="")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    out: dict[str, Any] = {"machine": machine_info(), "commit": git_commit(), "series": {}}
    for label, overrides in series(a.series.split(",")).items():
        for seed in seeds:
            out["series"][f"{label}/s{seed}"] = score_run(run_dir(label, overrides, seed))
            print(f"[{label}/s{seed}] scored", flush=True)
    write(RESULTS / f"{name}{'-' + a.tag if a.tag else ''}", out, render)


def main() -> None:
    restate("combine", __doc__ or "", score, markdown)


def write(stem: Path, result: dict, render: Callable[[dict], str]) -> None:
    """``stem``.json and ``stem``.md (printed too)."""
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    stem.with_suffix(".md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
