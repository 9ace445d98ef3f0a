"""Energy-normalised metrics and the greenest model within the quality target."""

from __future__ import annotations

import pytest

from greentune.config import EnergyConfig
from greentune.energy.ledger import Ledger
from greentune.evaluate.green import bill_models, greenest
from greentune.evaluate.table import energy_headers, energy_lines
from greentune.results import RunMetrics
from greentune.tasks.classify.predict import QUALITY as CLASSIFY
from greentune.tasks.forecast.predict import QUALITY as FORECAST


def billed(tmp_path, target: str = "2%") -> RunMetrics:
    metrics = RunMetrics.from_dict(forecast_metrics())
    return bill_models(metrics, Ledger.load(tmp_path), EnergyConfig(target=target), FORECAST)


def row(window: str, joules: float, start: str, command: str = "run", depth: int = 0) -> dict:
    return {
        "window": window,
        "phase": window.split("/")[0],
        "parent": None if depth == 0 else window.rsplit("/", 1)[0],
        "depth": depth,
        "command": command,
        "rank": 0,
        "start": start,
        "end": start,
        "duration_s": 1.0,
        "energy_j": {"cpu": joules},
        "sources": {"cpu": "fake"},
        "kind": "model",
        "intensity_g_per_kwh": 360.0,
        "emissions_g": joules / 3.6e6 * 360.0,
        "pue": 1.0,
        "ok": True,
        "extra": {},
    }


def forecast_metrics() -> dict:
    return {
        "task": "forecast",
        "model": "net",
        "test": {
            "net": {
                "mape": 4.0,
                "predictions": 10,
                "energy_windows": {"fit": {"train": 1.0}, "predict": {"test": 1.0}},
            },
            "linear": {
                "mape": 4.06,
                "predictions": 10,
                "energy_windows": {
                    "fit": {"baseline/linear": 0.5, "train/ridge-skip": 1.0},
                    "predict": {"baseline/linear": 0.5},
                },
            },
            "seasonal_naive_weekly": {
                "mape": 8.0,
                "predictions": 10,
                "energy_windows": {"fit": {}, "predict": {"baseline/seasonal_naive_weekly": 1.0}},
            },
        },
    }


def resumed_ledger(tmp_path) -> None:
    ledger = Ledger(
        [
            row("train", 3600.0, "2024-01-01T00:00:00"),  # first session, interrupted
            row("test", 999.0, "2024-01-01T00:30:00"),  # redone after the resume: not billed
            row("train", 7200.0, "2024-01-01T01:00:00"),
            row("train/ridge-skip", 36.0, "2024-01-01T01:00:00", depth=1),
            row("test", 360.0, "2024-01-01T02:00:00"),
            row("baseline/linear", 72.0, "2024-01-01T02:01:00"),
            row("baseline/seasonal_naive_weekly", 3.6, "2024-01-01T02:02:00"),
            row("evaluate", 50.0, "2024-01-01T03:00:00", command="evaluate"),
        ]
    )
    ledger.sessions = [
        {"command": "run", "started": "2024-01-01T00:00:00", "carbon": "fixed"},
        {"command": "run", "started": "2024-01-01T01:00:00", "carbon": "fixed"},
    ]
    ledger.save(tmp_path)


def test_models_are_billed_for_their_windows(tmp_path):
    resumed_ledger(tmp_path)
    metrics = billed(tmp_path).to_dict()
    net = metrics["test"]["net"]
    assert net["fit_wh"] == pytest.approx(3.0)  # both training sessions: 3600 + 7200 J
    assert net["predict_wh"] == pytest.approx(0.1)  # the latest test window only
    assert net["wh_per_1k_predictions"] == pytest.approx(10.0)
    assert net["emissions_g"] == pytest.approx((10800 + 360) / 3.6e6 * 360)
    linear = metrics["test"]["linear"]
    assert linear["fit_wh"] == pytest.approx((36 + 36) / 3600)  # half its window + the ridge fit
    assert linear["predict_wh"] == pytest.approx(36 / 3600)
    # skill over weekly naive per kWh: (1 - 4/8) / kWh
    assert net["skill_per_kwh"] == pytest.approx(0.5 / (net["energy_wh"] / 1000))
    assert metrics["energy"]["run_wh"] == pytest.approx((7200 + 360 + 72 + 3.6) / 3600)


def test_every_bill_says_how_its_energy_was_obtained(tmp_path):
    resumed_ledger(tmp_path)
    ledger = Ledger.load(tmp_path)
    for r in ledger.rows:  # the network trained on a metered GPU; everything else modelled
        r["kind"] = "measured" if r["window"] == "train" else "model"
    ledger.save(tmp_path)
    metrics = billed(tmp_path).to_dict()
    kinds = {name: r["energy_kind"] for name, r in metrics["test"].items()}
    assert kinds == {"net": "mixed", "linear": "model", "seasonal_naive_weekly": "model"}
    wh, grams = energy_headers(metrics["test"])
    assert (wh, grams) == ("Wh (mixed)", "gCO2e (mixed)")
    modelled = {k: v for k, v in metrics["test"].items() if k != "net"}
    assert energy_headers(modelled) == ("Wh (model)", "gCO2e (model)")
    line = energy_lines(metrics)[1]  # the greenest row: linear, modelled
    assert "linear (mape 4.06, 0.03 Wh (model), " in line
    assert energy_headers({"net": {"mape": 4.0}}) == ("Wh", "gCO2e")  # unmetered: no kind


def test_the_greenest_model_within_target_can_be_a_baseline(tmp_path):
    resumed_ledger(tmp_path)
    typed = billed(tmp_path, "2%")
    metrics = typed.to_dict()
    energy = metrics["energy"]
    assert energy["best"] == "net" and energy["greenest"] == "linear"
    assert energy["energy_ratio_to_best"] == pytest.approx(
        metrics["test"]["linear"]["energy_wh"] / metrics["test"]["net"]["energy_wh"]
    )
    strict = greenest(typed, 0.01, FORECAST)  # linear's 1.5 % gap is outside 1 %
    assert strict["greenest"] == "net"


def test_the_choice_reads_validation_scores_when_every_row_has_one(tmp_path):
    resumed_ledger(tmp_path)
    typed = billed(tmp_path, "2%")
    assert greenest(typed, 0.02, FORECAST)["chosen_on"] == "test"
    # on validation the naive looks best: it is chosen there, whatever the test says
    typed.validation = {"net": {"mape": 5.0}, "linear": {"mape": 5.5}}
    typed.validation["seasonal_naive_weekly"] = {"mape": 4.0}
    got = greenest(typed, 0.02, FORECAST)
    assert (got["best"], got["greenest"], got["chosen_on"]) == (
        "seasonal_naive_weekly",
        "seasonal_naive_weekly",
        "validation",
    )
    del typed.validation["linear"]  # one row without a validation score: back to test
    assert greenest(typed, 0.02, FORECAST)["best"] == "net"


def test_greenest_for_classification_uses_macro_f1():
    metrics = {
        "task": "classify",
        "model": "bert",
        "test": {
            "bert": {"macro_f1": 0.90, "energy_wh": 10.0, "emissions_g": 4.0},
            "tfidf": {"macro_f1": 0.89, "energy_wh": 0.01, "emissions_g": 0.004},
            "majority": {"macro_f1": 0.30, "energy_wh": 0.0, "emissions_g": 0.0},
        },
    }
    out = greenest(RunMetrics.from_dict(metrics), 0.02, CLASSIFY)
    assert out["best"] == "bert" and out["greenest"] == "tfidf"
    assert out["energy_ratio_to_best"] == pytest.approx(0.001)


@pytest.mark.parametrize(
    "order", [("ensemble-mean", "ensemble-weighted"), ("ensemble-weighted", "ensemble-mean")]
)
def test_rows_that_bill_the_same_are_told_apart_by_validation(tmp_path, order):
    resumed_ledger(tmp_path)
    raw = forecast_metrics()
    net = raw["test"]["net"]
    # two ensembles of the same members bill the same energy
    raw["test"] = {name: {**net, "mape": 3.0} for name in order}
    metrics = bill_models(
        RunMetrics.from_dict(raw), Ledger.load(tmp_path), EnergyConfig(target="2%"), FORECAST
    )
    bills = {n: r.bill.energy_wh for n, r in metrics.test.items() if r.bill is not None}
    assert bills["ensemble-mean"] == bills["ensemble-weighted"] > 0
    metrics.validation = {"ensemble-mean": {"mape": 2.45}, "ensemble-weighted": {"mape": 2.50}}
    assert greenest(metrics, 0.02, FORECAST)["greenest"] == "ensemble-mean"
    metrics.validation = {"ensemble-mean": {"mape": 1.95}, "ensemble-weighted": {"mape": 1.85}}
    got = greenest(metrics, 0.10, FORECAST)  # both within the target: the better one
    assert (got["best"], got["greenest"]) == ("ensemble-weighted", "ensemble-weighted")
