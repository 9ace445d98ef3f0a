"""Refit the cheap rows on training + validation before they forecast test? Judged on other data.

A run chooses every setting on validation: the ridge's design and penalty, LightGBM's design, tree
size and rounds (early stopping), the ensembles' weights. A practitioner would then fit the chosen
models once more on all the data before the test period, so that the latest weeks count. This
restates each default run with that refit, nothing retrained but the cheap rows:

- ``linear``: the same design and alpha on every complete window whose horizon ends before the
  test rows (``greentune.evaluate.ridge.refit_linear``);
- ``linear_clock``: per clock minute, the same on that minute's training + validation windows;
- ``lightgbm`` (and any LightGBM design a weighted ensemble weighs): the same design, tree size and
  rounds, no early stopping, on the rows before the test rows (``lgbm.refit_design``);
- seasonal naives and the network: unchanged; ensembles: the run's weights (fitted on the
  validation forecasts of the train-only fits) on the refitted members' test forecasts;
- the recommended row: the run's (chosen on validation, which refitting does not touch).

The fits it starts from are the run's own (``rows/``, checked against ``predictions.parquet``).
The rule to adopt refitting as a default was written before any refit forecast was computed
(/work/notes/prereg59.md; quoted in benchmarks/README.md): the recommended row's test MAPE with
refit / without, median over the 17 other series <= 0.99 and below 1 on >= 12 of them.
Victoria is reported, not part of the choice.

    .venv/bin/python benchmarks/refit.py [--series pjm,isone] [--seeds 0] [--tag NAME]

Runs: benchmarks/combine.py's default runs (benchmarks/results/runs/combine-SERIES-sSEED, made
there when missing). Writes benchmarks/results/refit[-TAG].json and .md. Test MAPE only: the
refits' energy is not billed here (each is one more fit of a row the run already billed).
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from combine import arrays, mape, restate

from greentune.data.windows import ForecastData, prepare_forecast_data, with_scaler
from greentune.evaluate.ensemble import combine
from greentune.evaluate.lgbm import refit_design
from greentune.evaluate.ridge import clock_origins, refit_linear
from greentune.results import Forecast
from greentune.rundir import RunDir
from greentune.tasks.forecast.artifacts import load_scaler
from greentune.tasks.forecast.ensemble import MODEL
from greentune.tasks.forecast.rows import RowSet, SavedRow

ADOPT_MEDIAN, ADOPT_BELOW = 0.99, 12


def refitted(data: ForecastData, row: SavedRow) -> SavedRow:
    """``row`` with its fits made again on training + validation (same settings)."""
    L, H = data.context_length, data.horizon
    if row.kind == "ridge":
        every = np.arange(L, data.test_start - H + 1)
        return SavedRow("ridge", ridges={-1: refit_linear(data, row.ridges[-1], every)})
    if row.kind == "ridge_clock":
        fits = {}
        for minute, fit in row.ridges.items():
            train, val = clock_origins(data, minute)
            fits[minute] = refit_linear(data, fit, np.concatenate([train, val]))
        return SavedRow("ridge_clock", ridges=fits)
    if row.kind == "lightgbm":
        fits = [refit_design(data, j, f) for j, f in enumerate(row.lgbm)]
        return SavedRow("lightgbm", lgbm=fits)
    return row  # a seasonal naive: nothing fitted


def score(path: Path) -> dict[str, Any]:
    run = RunDir(path)
    metrics = run.metrics
    rows = RowSet.load(path)
    if rows is None:
        raise SystemExit(f"{path} keeps no rows/ (made before they were kept): delete it")
    data = with_scaler(prepare_forecast_data(run.config.data), load_scaler(run.model_dir))
    test = data.test.origins
    saved, y = arrays(run.predictions)
    before: dict[str, np.ndarray] = {MODEL: saved[metrics.model]}
    after: dict[str, np.ndarray] = {MODEL: saved[metrics.model]}
    for name, row in rows.rows.items():
        point = row.forecast(data, test).point
        if name in saved:  # the kept fits are the run's: its own forecasts, to float precision
            np.testing.assert_allclose(point, saved[name], rtol=1e-9, err_msg=name)
        before[name] = point
        after[name] = refitted(data, row).forecast(data, test).point
    for name, ens in rows.ensembles.items():
        for own, members in ((before, ens.members), (after, ens.members)):
            fc = combine(ens.kind, {m: Forecast(own[m]) for m in members}, ens.weights)
            own[name] = fc.point
        if not math.isclose(mape(y, before[name]), metrics.test[name].scores["mape"], rel_tol=1e-6):
            raise SystemExit(f"{path}: {name} restates {mape(y, before[name])}")
    rec = metrics.energy.greenest if metrics.energy else None
    rec_key = MODEL if rec == metrics.model else rec
    table = {
        name: {"before": mape(y, before[name]), "after": mape(y, after[name])}
        for name in before
        if name == MODEL or name in metrics.test
    }
    # a row that is not kept (random_init, a peer: networks) is not refitted: its own score
    unchanged = metrics.test[rec].scores["mape"] if rec and rec_key not in before else None
    return {
        "recommended": rec,
        "recommended_before": mape(y, before[rec_key]) if rec_key in before else unchanged,
        "recommended_after": mape(y, after[rec_key]) if rec_key in after else unchanged,
        "rows": table,
        "validation_origins": len(data.val),
        "training_origins": len(data.train),
    }


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Refit the cheap rows on training + validation before test",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores. Commit {result['commit']}. Test MAPE %, "
        "without refit -> with (ratio). The recommended row is the run's, chosen on validation.",
        "",
        "| series | recommended | its test MAPE | linear | linear_clock | LightGBM | "
        "recommended / LightGBM, without -> with |",
        "|---|---|---|---|---|---|---|",
    ]
    ratios: list[float] = []
    for key, row in result["series"].items():
        cells = []
        for name in ("linear", "linear_clock", "lightgbm"):
            r = row["rows"].get(name)
            cells.append(
                f"{r['before']:.3f} -> {r['after']:.3f} ({r['after'] / r['before']:.3f})"
                if r
                else "-"
            )
        b, a = row["recommended_before"], row["recommended_after"]
        ratios.append(a / b)
        lg = row["rows"].get("lightgbm")
        issue = f"{b / lg['before']:.3f} -> {a / lg['after']:.3f}" if lg else "-"
        lines.append(
            f"| {key} | {row['recommended']} | {b:.3f} -> {a:.3f} ({a / b:.4f}) | "
            f"{' | '.join(cells)} | {issue} |"
        )
    below = sum(r < 1 for r in ratios)
    median = statistics.median(ratios)
    adopted = median <= ADOPT_MEDIAN and below >= ADOPT_BELOW
    lines += [
        "",
        f"Recommended row, with refit / without: median {median:.4f}, below 1 on {below} of "
        f"{len(ratios)}. Rule written before: median <= {ADOPT_MEDIAN} and below 1 on >= "
        f"{ADOPT_BELOW} of 17: **{'adopted' if adopted else 'not adopted'}**"
        + (
            ""
            if len(ratios) == 17
            else " (that rule is the 17 other series'; this set's own, if"
            " any, is in benchmarks/README.md)"
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    restate("refit", __doc__ or "", score, markdown)


if __name__ == "__main__":
    main()
