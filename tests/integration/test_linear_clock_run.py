"""`linear_clock`, a default baseline since 2026-12-07: a run scores it and weighs it in the
ensemble where it applies, and leaves it out with a log line where it does not."""

from pathlib import Path

import numpy as np
import pandas as pd

import greentune as gt
from tests.conftest import make_series, series_overrides


def _run(tmp: Path, *extra: str) -> tuple[gt.RunDir, list[str]]:
    csv = tmp / "load.csv"
    make_series().to_csv(csv, index=False)
    cfg = gt.build_config(
        overrides=[
            *series_overrides(csv, tmp / "runs", "clock"),
            "train.epochs=1",
            "eval.baselines=[linear,linear_clock]",
            "eval.ensembles=[weighted]",
            *extra,
        ]
    )
    lines: list[str] = []
    return gt.run(cfg, echo=lines.append), lines


def test_a_run_scores_linear_clock_and_weighs_it_in(tmp_path: Path) -> None:
    run, lines = _run(tmp_path)
    metrics = run.metrics
    assert {"linear", "linear_clock"} <= set(metrics.test)
    assert metrics.ensembles["ensemble-weighted"]["members"] == ["model", "linear", "linear_clock"]
    assert not any("left out" in line for line in lines)


def test_channel_independent_data_scores_it_and_serves_it(tmp_path: Path) -> None:
    """One ridge per clock time shared by the series; kept in rows/ and served as scored."""
    run, lines = _run(
        tmp_path,
        "data.multivariate=true",
        "data.temperature_col=null",
        "data.channel_independent=true",
    )
    assert {"linear", "linear_clock"} <= set(run.metrics.test)
    members = run.metrics.ensembles["ensemble-weighted"]["members"]
    assert members == ["model", "linear", "linear_clock"]
    assert not any("left out" in line for line in lines)
    saved = pd.read_parquet(run.path / "predictions.parquet")
    saved = saved[saved["model"] == "linear_clock"]
    predictor = gt.Predictor.from_run(run.path, row="linear_clock")
    got = predictor.predict_file(run.config.data.path, origins="daily")
    for target in ("load_mw", "temp_c"):
        want = saved[saved["target"] == target].reset_index(drop=True)
        mine = got[got["origin"].isin(want["origin"])].reset_index(drop=True)
        assert len(mine) == len(want) > 0, target
        np.testing.assert_allclose(mine[f"{target}_forecast"], want["y_pred"], rtol=1e-12)


def test_one_target_keeps_the_pooled_table_only(tmp_path: Path) -> None:
    run, _ = _run(tmp_path)
    assert run.metrics.by_target is None
    assert "by_target" not in (run.path / "metrics.json").read_text()
