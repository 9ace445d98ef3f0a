"""Forecasting with the row a run recommends, through the product's own path, beside its network.

For each default run (benchmarks/combine.py's, reused): ``Predictor.from_run(run,
row="recommended")`` and the network alone (``Predictor.from_run(run)``), both reading the run's
own CSV as a user would (``predict_file``):

- reproduction: the recommended row's daily backtest on the run's test origins against the run's
  ``predictions.parquet`` (largest relative difference of the point forecasts);
- cost of one day-ahead forecast (``predict`` on 21 days of history and the horizon's
  covariates, from the file's latest origin the recommended row forecasts from): wall and
  process CPU seconds, medians of 7 after one warm-up, network and recommended row in
  alternating order; modelled energy = CPU seconds x greentune's CPU power per thread here (the
  same model as every bill on this machine; no counters).

    .venv/bin/python benchmarks/rows.py [--series pjm,isone,vic_elec] [--seeds 0] [--tag NAME]

Writes benchmarks/results/rows[-TAG].json and .md.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from combine import restate

import greentune as gt
from greentune.config import EnergyConfig
from greentune.energy.model import resolve_cpu_power
from greentune.rundir import RunDir

REPEATS = 7
HISTORY_DAYS = 21
W_PER_THREAD = resolve_cpu_power(EnergyConfig().cpu_power_per_thread_w).power_per_thread_w


def _one_day(path: Path, cfg: Any, horizon: int, predictor: gt.Predictor) -> pd.DataFrame:
    """The file's last 21 days of history and a horizon after them, the target blanked over the
    horizon (the covariates stay: the forecast of them a user would give), ending at the latest
    row from which ``predictor`` forecasts (a ridge per clock time forecasts from its own times;
    the run's clock is local time, the file's may be UTC)."""
    d = cfg.data
    frame = pd.read_csv(path)
    times = pd.to_datetime(frame[d.time_col])
    step = times.iloc[1] - times.iloc[0]
    history = int(pd.Timedelta(days=HISTORY_DAYS) / step)
    for end in range(len(frame), len(frame) - int(pd.Timedelta(days=1) / step) - 1, -1):
        out = frame.iloc[end - horizon - history : end].copy()
        out.loc[out.index[-horizon:], d.target] = np.nan
        try:
            predictor.predict(out)
        except gt.DataError:
            continue
        return out
    raise SystemExit(f"{path}: no origin in the last day that {predictor.info} forecasts from")


def _cost(predictor: gt.Predictor, frame: pd.DataFrame) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    predictor.predict(frame)
    return time.perf_counter() - t0, time.process_time() - c0


def reproduced(saved: pd.DataFrame, got: pd.DataFrame, target: str) -> tuple[int, float | None]:
    """(windows compared, largest relative difference) of ``got``'s point forecasts against a
    run's saved rows of one model (``predictions.parquet``'s y_pred)."""
    merged = saved.merge(
        got[["origin", "step", f"{target}_forecast"]], on=["origin", "step"], how="inner"
    )
    rel = np.abs(merged[f"{target}_forecast"] - merged["y_pred"]) / np.abs(merged["y_pred"])
    return int(merged["origin"].nunique()), float(rel.max()) if len(rel) else None


def alternating(
    predictors: dict[str, gt.Predictor], frame: pd.DataFrame, repeats: int = REPEATS
) -> dict[str, dict[str, float]]:
    """Median wall and process CPU seconds of one ``predict(frame)`` per predictor, after a
    warm-up each, the order reversed from one repeat to the next."""
    for p in predictors.values():
        _cost(p, frame)
    wall: dict[str, list[float]] = {k: [] for k in predictors}
    cpu: dict[str, list[float]] = {k: [] for k in predictors}
    order = list(predictors.items())
    for i in range(repeats):
        for name, p in order if i % 2 == 0 else order[::-1]:
            w, c = _cost(p, frame)
            wall[name].append(w)
            cpu[name].append(c)
    return {
        k: {"wall_s": statistics.median(wall[k]), "cpu_s": statistics.median(cpu[k])} for k in wall
    }


def score(path: Path, repeats: int = REPEATS) -> dict[str, Any]:
    run = RunDir(path)
    metrics, cfg = run.metrics, run.config
    rec = metrics.energy.greenest if metrics.energy else None
    net = gt.Predictor.from_run(path)
    best = gt.Predictor.from_run(path, row="recommended")
    data_path = Path(str(cfg.data.path))
    saved = run.predictions
    saved = saved[saved["model"] == rec]
    got = best.predict_file(data_path, origins="daily")
    got = got[got["origin"].isin(pd.to_datetime(saved["origin"]).unique())]
    windows, max_rel = reproduced(saved, got, str(cfg.data.target))
    frame = _one_day(data_path, cfg, int(best.horizon), best)
    med = alternating({"network": net, "recommended": best}, frame, repeats)
    return {
        "recommended": rec,
        "network": metrics.model,
        "test_mape": {
            "recommended": metrics.test[rec].scores["mape"] if rec else None,
            "network": metrics.result.scores["mape"],
        },
        "reproduced_windows": windows,
        "max_rel_diff": max_rel,
        "one_forecast": med,
        "wh_per_1k_forecasts_model": {
            k: 1000 * v["cpu_s"] * W_PER_THREAD / 3600 for k, v in med.items()
        },
        "w_per_thread": W_PER_THREAD,
    }


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# The recommended row through predict, beside the network",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores. Commit {result['commit']}. One day-ahead "
        "forecast from 21 days of history: medians; energy modelled (CPU seconds x "
        f"{next(iter(result['series'].values()))['w_per_thread']:g} W per thread).",
        "",
        "| series | recommended | test MAPE rec / network | reproduced (windows, max rel diff) | "
        "ms rec / network | CPU ms rec / network | Wh per 1,000 (model) rec / network |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, r in result["series"].items():
        o, e, t = r["one_forecast"], r["wh_per_1k_forecasts_model"], r["test_mape"]
        lines.append(
            f"| {key} | {r['recommended']} | {t['recommended']:.3f} / {t['network']:.3f} | "
            f"{r['reproduced_windows']}, {r['max_rel_diff']:.1e} | "
            f"{1000 * o['recommended']['wall_s']:.1f} / {1000 * o['network']['wall_s']:.1f} | "
            f"{1000 * o['recommended']['cpu_s']:.1f} / {1000 * o['network']['cpu_s']:.1f} | "
            f"{e['recommended']:.3g} / {e['network']:.3g} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    restate("rows", __doc__ or "", score, markdown)


if __name__ == "__main__":
    main()
