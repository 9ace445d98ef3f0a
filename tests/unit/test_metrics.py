import numpy as np
import pytest

from greentune.evaluate.metrics import (
    classification_metrics,
    forecast_metrics,
    interval_coverage,
    mase_scale,
    pinball_loss,
)
from greentune.evaluate.table import verdict


def test_point_metrics_by_hand():
    y = np.array([[[100.0], [200.0]]])
    yhat = np.array([[[110.0], [190.0]]])
    m = forecast_metrics(y, yhat, scale=5.0)
    assert m["mae"] == 10.0 and m["rmse"] == 10.0 and m["mse"] == 100.0
    assert m["mape"] == pytest.approx(100 * (0.1 + 0.05) / 2)
    assert m["smape"] == pytest.approx(100 * (20 / 210 + 20 / 390) / 2)
    assert m["mase"] == 2.0


def test_mase_scale_is_the_in_sample_seasonal_naive_error():
    train = np.array([1.0, 2.0, 4.0, 7.0])
    assert mase_scale(train, 1) == pytest.approx((1 + 2 + 3) / 3)
    assert mase_scale(train, 2) == pytest.approx((3 + 5) / 2)
    with pytest.raises(ValueError, match="more than 4"):
        mase_scale(train, 4)


def test_pinball_and_coverage():
    y = np.array([0.0, 10.0])
    q = {0.1: np.array([1.0, 1.0]), 0.9: np.array([1.0, 1.0])}
    # q=0.1: over by 1 -> 0.9; under by 9 -> 0.9;  q=0.9: over by 1 -> 0.1; under by 9 -> 8.1
    assert pinball_loss(y, q) == pytest.approx(np.mean([(0.9 + 0.9) / 2, (0.1 + 8.1) / 2]))
    assert interval_coverage(
        np.array([0.0, 5.0, 11.0]), np.zeros(3), np.full(3, 10.0)
    ) == pytest.approx(200 / 3)


def test_classification_metrics():
    m = classification_metrics(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), 3)
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # F1: class 0 = 0.5, class 1 = 0.8, class 2 = 0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_verdict_states_wins_and_losses_plainly():
    results = {
        "ours": {"mape": 4.0},
        "naive": {"mape": 8.0},
        "lgbm": {"mape": 3.2},
        "perfect": {"mape": 0.0},
    }
    lines = verdict(results, "ours")
    assert "ours MAPE is 50.0 % lower than naive" in lines
    assert "ours MAPE is 25.0 % higher than lgbm" in lines
    assert "perfect has MAPE 0.00 %" in lines
    assert lines[-1].startswith("best on the test split: perfect")


def test_the_networks_start_is_named_and_compared_first():
    """The row the network starts from is the baseline billed for a fit inside its training
    (ridge skip: linear; a hybrid's LightGBM base: lightgbm); the random-init ablation and
    ensembles reuse that fit but are not starts."""
    from rich.console import Console

    from greentune.evaluate.table import forecast_table
    from greentune.results import ModelResult, RunMetrics
    from greentune.tasks.forecast.task import network_start

    def row(mape: float, *fit: str) -> ModelResult:
        return ModelResult({"mape": mape}, energy_windows={"fit": dict.fromkeys(fit, 1.0)})

    test = {
        "ours": row(3.9, "train"),
        "ensemble-mean": row(3.3, "train", "train/ridge-skip", "baseline/linear"),
        "random_init": row(3.8, "baseline/random_init", "train/ridge-skip"),
        "lightgbm": row(3.78, "baseline/lightgbm"),
        "linear": row(3.75, "baseline/linear", "train/ridge-skip"),
    }
    metrics = RunMetrics("forecast", "ours", test, ensembles={"ensemble-mean": {}})
    assert network_start(metrics) == "linear"
    test["linear"] = row(3.75, "baseline/linear")  # a hybrid: its base is lightgbm's fit
    test["lightgbm"] = row(3.78, "baseline/lightgbm", "train/hybrid-base")
    assert network_start(metrics) == "lightgbm"
    del test["lightgbm"]
    assert network_start(metrics) is None  # no baseline shares the network's start

    results = {"ours": {"mape": 3.9}, "lightgbm": {"mape": 3.78}, "linear": {"mape": 3.75}}
    lines = verdict(results, "ours", start="linear")
    assert lines[0] == (
        "ours MAPE is 4.0 % higher than linear (its starting point: what fine-tuning changed)"
    )
    console = Console(width=250, record=True)
    console.print(forecast_table(results, "ours", "t", start="linear"))
    assert "linear (the network's start)" in console.export_text()


def test_the_run_table_repeats_the_data_warnings_after_the_verdict():
    from rich.console import Console

    from greentune.results import ModelResult, RunMetrics
    from greentune.tasks.forecast.predict import QUALITY
    from greentune.tasks.forecast.task import ForecastTask

    test = {"ours": ModelResult({"mape": 3.9}), "lightgbm": ModelResult({"mape": 3.8})}
    warning = "test: 1 scored value(s) of [bold]load[/bold] below 10 % of their typical value"
    metrics = RunMetrics("forecast", "ours", test, data={"warnings": [warning]})
    console = Console(width=250, record=True)
    items = ForecastTask().render(metrics, QUALITY)
    for item in items:
        console.print(item)
    lines = console.export_text().splitlines()
    assert lines[-1] == f"  warning: {warning}"  # a column's brackets are printed, not markup
    assert lines[-2] == "  best on the test split: lightgbm (MAPE 3.80 %), not the fine-tuned model"
    assert ForecastTask().render(RunMetrics("forecast", "ours", test), QUALITY)[-1] == (
        "  best on the test split: lightgbm (MAPE 3.80 %), not the fine-tuned model"
    )


def test_rows_are_ranked_and_compared_by_the_runs_metric():
    from rich.console import Console

    from greentune.config import load_config
    from greentune.evaluate.table import forecast_table
    from greentune.tasks.forecast.predict import quality_for

    results = {
        "ours": {"mape": 3.9, "mase": 0.50},
        "lightgbm": {"mape": 3.7, "mase": 0.55},
        "linear": {"mape": 3.8, "mase": float("nan")},
    }
    quality = quality_for(load_config(None, ["eval.metric=mase"]))
    assert (quality.metric, quality.higher_is_better) == ("mase", False)
    assert verdict(results, "ours", "linear", quality.metric) == [
        "linear: no MASE to compare",
        "ours MASE is 9.1 % lower than lightgbm",
    ]
    assert verdict(results, "ours")[-1] == (
        "best on the test split: lightgbm (MAPE 3.70 %), not the fine-tuned model"
    )
    console = Console(width=250, record=True)
    console.print(forecast_table(results, "ours", "t", None, "mase"))
    lines = console.export_text().splitlines()
    rows = [line.split("│")[1].split()[0] for line in lines if line[:1] == "│"]
    assert [r for r in rows if r in results] == ["ours", "lightgbm", "linear"]  # NaN last
