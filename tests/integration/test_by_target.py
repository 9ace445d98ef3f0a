"""A run over several targets scores each target alone (metrics.json's ``by_target``): from the
same forecasts as the pooled table, kept through a read, printed per series by ``run`` and the
report, and kept true by ``greentune ensemble``, ``compress`` and ``evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import greentune as gt
from greentune.cli import app, commands, compress  # noqa: F401
from greentune.evaluate.metrics import mase_scale
from tests.conftest import make_series, series_overrides

TARGETS = ["load_mw", "temp_c"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> gt.RunDir:
    tmp = tmp_path_factory.mktemp("bytarget")
    make_series().to_csv(tmp / "load.csv", index=False)
    cfg = gt.build_config(
        overrides=[
            *series_overrides(tmp / "load.csv", tmp / "runs", "several"),
            "train.epochs=1",
            "data.multivariate=true",
            "data.temperature_col=null",
            "data.channel_independent=true",
            "eval.baselines=[linear,linear_clock,lightgbm]",
        ]
    )
    return gt.run(cfg, echo=lambda m: None)


def test_each_row_is_scored_on_each_target_alone(run) -> None:
    m = run.metrics
    assert m.by_target is not None and set(m.by_target) == set(m.test)
    saved = pd.read_parquet(run.path / "predictions.parquet")
    for row, scores in m.by_target.items():
        assert list(scores) == TARGETS
        for target, got in scores.items():
            mine = saved[(saved["model"] == row) & (saved["target"] == target)]
            y, yhat = mine["y_true"].to_numpy(), mine["y_pred"].to_numpy()
            assert got["mape"] == pytest.approx(100 * np.mean(np.abs(yhat - y) / np.abs(y)))
            assert got["mae"] == pytest.approx(np.mean(np.abs(yhat - y)))
            assert 0 <= got["coverage"] <= 100
        # as many windows per target: the pooled MAPE is the targets' mean
        pooled = np.mean([scores[t]["mape"] for t in TARGETS])
        assert m.test[row].scores["mape"] == pytest.approx(pooled, rel=1e-9)
    # MASE: each target by its own training rows' daily naive error, not the pooled one
    frame = pd.read_csv(run.config.data.path, parse_dates=["ts"]).set_index("ts")
    assert m.data is not None
    before = frame.index < pd.Timestamp(m.data["val_start"])
    for target in TARGETS:
        scale = mase_scale(frame.loc[before, target].to_numpy(), 24)
        row = m.by_target["linear"][target]
        assert row["mase"] == pytest.approx(row["mae"] / scale, rel=1e-9)


def test_run_and_the_report_show_each_series(run, tmp_path) -> None:
    from rich.console import Console

    from greentune.report import write_report
    from greentune.report.html import _num
    from greentune.tasks import TASKS

    m = run.metrics
    assert m.by_target is not None and m.energy is not None
    task = TASKS.get("forecast")
    console = Console(record=True, width=200)
    for part in task.render(m, task.quality_of(run.config)):
        console.print(part)
    text = console.export_text()
    assert "test MAPE % per series" in text
    head = next(t for t in text.splitlines() if "series" in t and "lightgbm" in t)
    assert f"{m.energy.greenest} (recommended)" in head and m.model in head
    line = next(t for t in text.splitlines() if "temp_c" in t and "│" in t)
    assert f"{m.by_target['lightgbm']['temp_c']['mape']:.2f}" in line

    html = write_report([run.path], tmp_path / "report.html").read_text()
    assert "Each series on its own (test mape)" in html
    assert f"<td>{_num(m.by_target['lightgbm']['temp_c']['mape'])}</td>" in html


def test_an_ensemble_of_such_runs_scores_each_series(run, tmp_path) -> None:
    ens = gt.ensemble([str(run.path), f"{run.path}:linear_clock"], tmp_path / "ens")
    m = ens.metrics
    assert m.by_target is not None and set(m.by_target) == set(m.test)
    assert list(m.by_target["ensemble-mean"]) == TARGETS


def test_a_compressed_variant_and_evaluate_keep_it_true(run) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["compress", str(run.path), "-m", "int8-dynamic", "--rounds", "1"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    variant = Path(json.loads((run.path / "compression.json").read_text())["variants"][0]["run"])
    m = gt.RunDir(variant).metrics
    assert m.by_target is not None and set(m.by_target) == set(m.test)
    assert run.metrics.model not in m.by_target  # the parent's network is not this row
    saved = pd.read_parquet(variant / "predictions.parquet")
    mine = saved[(saved["model"] == m.model) & (saved["target"] == "load_mw")]
    y, yhat = mine["y_true"].to_numpy(), mine["y_pred"].to_numpy()
    mape = 100 * np.mean(np.abs(yhat - y) / np.abs(y))
    assert m.by_target[m.model]["load_mw"]["mape"] == pytest.approx(mape)
    # evaluate scores the variant again, per target too; a stale entry would not be replaced
    stale = json.loads((variant / "metrics.json").read_text())
    stale["by_target"][m.model]["load_mw"]["mape"] = -1.0
    (variant / "metrics.json").write_text(json.dumps(stale))
    assert runner.invoke(app, ["evaluate", str(variant)], catch_exceptions=False).exit_code == 0
    again = gt.RunDir(variant).metrics
    assert again.by_target is not None
    assert again.by_target[m.model]["load_mw"]["mape"] == pytest.approx(mape, rel=1e-4)
