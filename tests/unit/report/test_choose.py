"""The choice among rows of several runs: the Pareto front, the greenest within the target on
validation, the fallback to test, and runs that cannot be compared."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from greentune.config import RunConfig
from greentune.energy.ledger import Ledger
from greentune.errors import ConfigError
from greentune.report.choose import Candidate, choose, pareto_front
from greentune.report.collect import RunView
from greentune.report.plots import forecast_chain, per_class_f1
from greentune.results import EnergyBill, ModelResult, RunMetrics
from greentune.rundir import RunDir
from greentune.tasks import TASKS

QUALITY = TASKS.get("forecast").quality
DATA = {"test_start": "2021-02-07", "end": "2021-02-12", "step": "1h", "windows": {"test": 6}}


def _row(mape: float, wh: float | None) -> ModelResult:
    bill = None if wh is None else EnergyBill(wh, wh * 0.5, 0.0, 0.0, wh, wh * 0.5)
    return ModelResult(scores={"mape": mape}, bill=bill)


def _view(
    tmp: Path,
    name: str,
    rows: dict[str, tuple[float, float | None, float | None]],
    data: dict | None = None,
    parent: str | None = None,
    private: list[str] | None = None,
) -> RunView:
    """A run whose rows are name -> (test MAPE, validation MAPE or None, Wh or None)."""
    metrics = RunMetrics(
        task="forecast",
        model=next(iter(rows)),
        test={n: _row(t, wh) for n, (t, _, wh) in rows.items()},
        data=data or DATA,
        validation={n: {"mape": v} for n, (_, v, _) in rows.items() if v is not None} or None,
        privacy={"non_private_reference": private} if private else None,
    )
    return RunView(
        RunDir(tmp / name), RunConfig(), metrics, QUALITY, Ledger(), None, None, "complete", parent
    )


def test_the_front_keeps_what_no_row_beats_on_both_cheapest_first() -> None:
    rows = [
        Candidate(label, "r", label, mape, None, wh, None, False)
        for label, mape, wh in [
            ("a", 3.0, 1.0),
            ("b", 2.0, 2.0),
            ("c", 2.5, 3.0),
            ("d", 1.0, 4.0),
            ("e", 1.0, 5.0),
            ("f", 0.5, None),
            ("g", float("nan"), 0.1),
        ]
    ]
    assert pareto_front(rows, lambda c: c.test, QUALITY) == ["a", "b", "d"]


def test_several_runs_recommend_the_greenest_within_the_target_on_validation(tmp_path) -> None:
    a = _view(tmp_path, "a", {"net": (3.0, 2.00, 10.0), "lightgbm": (3.4, 2.03, 1.0)})
    b = _view(tmp_path, "b", {"net": (2.5, 2.30, 8.0), "linear": (2.0, 2.50, 0.5)})
    choice = choose([a, b], target=0.02)
    assert choice.chosen_on == "validation"
    assert choice.verdict["best"] == "a/net"
    # within 2 % of 2.00 on validation: a/net and a/lightgbm (2.03); the greener is lightgbm,
    # although b/linear is best on test: the test split does not choose
    assert choice.verdict["greenest"] == "a/lightgbm"
    assert choice.verdict["energy_ratio_to_best"] == pytest.approx(0.1)
    assert choice.front == ["b/linear", "a/lightgbm", "a/net"]
    assert [c.label for c in choice.ordered()][:2] == ["a/net", "a/lightgbm"]


def test_one_row_without_a_validation_score_makes_the_choice_on_test(tmp_path) -> None:
    a = _view(tmp_path, "a", {"net": (3.0, 2.0, 10.0), "lightgbm": (3.4, None, 1.0)})
    choice = choose([a], target=0.2)
    assert choice.chosen_on == "test"
    assert choice.verdict["best"] == "net"
    assert choice.verdict["greenest"] == "lightgbm"  # 3.4 <= 3.0 * 1.2


def test_non_private_references_and_unbilled_rows_do_not_compete(tmp_path) -> None:
    a = _view(
        tmp_path,
        "a",
        {"dp-net": (3.0, 3.0, 5.0), "net": (1.0, 1.0, 1.0), "free": (0.5, 0.5, None)},
        private=["net"],
    )
    choice = choose([a], target=0.0)
    assert choice.verdict["best"] == choice.verdict["greenest"] == "dp-net"


def test_a_variant_listed_beside_its_parent_adds_only_its_own_model(tmp_path) -> None:
    parent = _view(tmp_path, "a", {"net": (3.0, 2.0, 10.0), "lightgbm": (3.4, 2.1, 1.0)})
    rows = {"net+int8": (3.1, None, None), "lightgbm": (3.4, 2.1, 1.0)}
    variant = _view(tmp_path, "a-int8", rows, parent=str(tmp_path / "a"))
    labels = [c.label for c in choose([parent, variant], 0.02).candidates]
    assert labels == ["a/net", "a/lightgbm", "a-int8/net+int8"]


def test_runs_on_other_test_windows_are_refused_with_what_differs(tmp_path) -> None:
    a = _view(tmp_path, "a", {"net": (3.0, 2.0, 1.0)})
    b = _view(tmp_path, "b", {"net": (3.0, 2.0, 1.0)}, data={**DATA, "test_start": "2021-03-01"})
    with pytest.raises(
        ConfigError,
        match=r"b was tested on other data than .*a \(test_start: "
        r"2021-03-01 against 2021-02-07\)",
    ):
        choose([a, b], 0.02)


def test_runs_ranked_by_different_scores_are_not_compared(tmp_path: Path) -> None:
    import dataclasses

    a = _view(tmp_path, "a", {"net": (3.0, 2.0, 1.0)})
    b = dataclasses.replace(
        _view(tmp_path, "b", {"net": (3.0, 2.0, 1.0)}),
        quality=dataclasses.replace(QUALITY, metric="mase"),
    )
    with pytest.raises(ConfigError, match=r"b ranks by mase, .*a by mape \(eval.metric\)"):
        choose([a, b], 0.02)


def test_f1_per_class_from_a_confusion_matrix() -> None:
    # class 0: tp 2, fp 1, fn 0 -> 4/5; class 1: tp 1, fp 0, fn 1 -> 2/3; class 2: never seen
    f1 = per_class_f1([[2, 0, 0], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_allclose(f1, [0.8, 2 / 3, 0.0])


def test_the_forecast_chain_takes_origins_that_do_not_overlap() -> None:
    times = pd.date_range("2021-01-01", periods=12, freq="1h")
    rows = []
    for k in range(0, 9):  # origins every hour, 4 steps each
        for step in range(4):
            rows.append(
                {
                    "model": "m",
                    "target": "y",
                    "origin": times[k],
                    "time": times[k] + pd.Timedelta(hours=step + 1),
                    "y_pred": float(k),
                }
            )
    chain = forecast_chain(pd.DataFrame(rows), "m", "y")
    assert list(chain["origin"].unique()) == [times[0], times[4], times[8]]
    assert chain["time"].is_unique and chain["time"].is_monotonic_increasing
