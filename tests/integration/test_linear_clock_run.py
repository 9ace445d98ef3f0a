"""`linear_clock`, a default baseline since 2026-12-07: a run scores it and weighs it in the
ensemble where it applies, and leaves it out with a log line where it does not."""

from pathlib import Path

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


def test_channel_independent_data_leaves_it_out_and_says_why(tmp_path: Path) -> None:
    run, lines = _run(tmp_path, "data.multivariate=true", "data.channel_independent=true")
    assert "linear" in run.metrics.test and "linear_clock" not in run.metrics.test
    assert run.metrics.ensembles["ensemble-weighted"]["members"] == ["model", "linear"]
    assert any(
        "baseline linear_clock: left out: it fits one series per ridge and this data is "
        "channel-independent" in line
        for line in lines
    )
