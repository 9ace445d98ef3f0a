"""RunDir: the one reader/writer of a run directory, typed, and old run directories still open."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from greentune.config import build_config
from greentune.errors import CheckpointError
from greentune.results import ModelResult, RunMetrics
from greentune.rundir import RunDir, read_status

V1 = Path(__file__).resolve().parents[1] / "data" / "v1-forecast-run"


@pytest.fixture
def v1(tmp_path) -> RunDir:
    """A copy of a run directory written by greentune 0.1.0 before the Python API existed."""
    shutil.copytree(V1, tmp_path / "v1")
    return RunDir(tmp_path / "v1")


def test_a_v1_run_directory_opens_with_typed_contents(v1):
    run = RunDir.open(v1.path)
    assert run.config.task == "forecast" and run.config.model.backbone == "tiny-bert"
    info = run.info
    assert (info.task, info.status, info.schema_version) == ("forecast", "complete", 1)
    m = run.metrics
    assert m.task == "forecast" and m.model == "tiny-bert-patch-lora"
    assert set(m.test) == {
        "tiny-bert-patch-lora",
        "seasonal_naive_daily",
        "seasonal_naive_weekly",
        "linear",
        "lightgbm",
        "random_init",
    }
    assert m.result.score("mape") == pytest.approx(5.054649046812851, rel=1e-12)
    assert m.result.bill is not None and m.result.bill.energy_wh > 0
    assert m.training is not None and m.training.best_epoch == 2 and m.training.steps == 39
    assert m.energy is not None and (m.energy.best, m.energy.greenest) == ("lightgbm", "linear")
    assert m.data is not None and m.data["windows"] == {"train": 201, "val": 21, "test": 6}
    assert len(run.predictions) == 6 * 6 * 24  # models x test origins x horizon
    assert len(run.ledger.rows) > 10


def test_metrics_round_trip_to_the_same_json(v1):
    """Reading metrics.json into dataclasses and writing it back changes nothing: other
    programs keep reading the same keys."""
    raw = json.loads((v1.path / "metrics.json").read_text())
    assert RunMetrics.from_dict(raw).to_dict() == raw
    v1.write_metrics(v1.metrics)
    assert json.loads((v1.path / "metrics.json").read_text()) == raw


def test_unknown_keys_survive_a_round_trip():
    raw = {
        "schema_version": 1,
        "task": "forecast",
        "model": "m",
        "test": {"m": {"mape": 1.0, "some_future_score": 2.0}},
        "from_a_newer_greentune": {"x": 1},
    }
    m = RunMetrics.from_dict(raw)
    assert m.extra == {"from_a_newer_greentune": {"x": 1}}
    assert m.result.scores == {"mape": 1.0, "some_future_score": 2.0}
    assert m.to_dict() == raw


def test_metrics_table_has_one_row_per_model(v1):
    table = v1.metrics.table()
    assert table.loc["linear", "mape"] == pytest.approx(2.4674394257721235)
    assert {"mape", "energy_wh", "emissions_g", "fit_s"} <= set(table.columns)
    assert "energy_windows" not in table.columns


def test_energy_by_phase_sums_top_level_windows(v1):
    phases = v1.energy_by_phase()
    assert list(phases.index) == ["data", "train", "test", "save", "baseline"]
    top = [r for r in v1.ledger.rows if r["depth"] == 0]
    assert phases["energy_j"].sum() == pytest.approx(sum(sum(r["energy_j"].values()) for r in top))
    assert phases["energy_wh"].tolist() == pytest.approx((phases["energy_j"] / 3600).tolist())
    assert phases.loc["baseline", "windows"] == 5
    assert v1.energy_by_phase(command="evaluate").empty


def test_create_start_status_and_refusals(tmp_path):
    cfg = build_config(overrides=[f"output_dir={tmp_path}", "name=r"])
    run = RunDir.create(cfg)
    assert run.path == tmp_path / "r" and read_status(run.path) is None
    with run.lock("run"):
        run.start(cfg)
        assert run.status == "running" and run.config == cfg
    assert run.status == "crashed"  # running, and nobody holds the lock
    run.set_status("failed", error="boom")
    assert run.info.error == "boom"
    run.set_status("complete", error=None)
    assert (run.info.status, run.info.error) == ("complete", None)
    assert read_status(run.path) == "complete"
    with pytest.raises(ValueError, match="unknown run status 'done'"):
        run.set_status("done")
    with pytest.raises(CheckpointError, match=r"r already exists; pick another name=\.\.\."):
        RunDir.create(cfg)
    with pytest.raises(CheckpointError, match="has no metrics.json; the run did not finish"):
        run.metrics  # noqa: B018
    with pytest.raises(CheckpointError, match="has no predictions.parquet"):
        run.predictions  # noqa: B018
    with pytest.raises(CheckpointError, match="is not a run directory"):
        RunDir.open(tmp_path)


def test_a_newer_or_damaged_run_directory_is_refused_with_what_to_do(v1):
    config = v1.path / "config.yaml"
    config.write_text(config.read_text().replace("schema_version: 1", "schema_version: 7"))
    with pytest.raises(CheckpointError, match=r"newer greentune \(schema 7.*upgrade greentune"):
        RunDir.open(v1.path)
    config.write_text(config.read_text().replace("schema_version: 7", "schema_version: 1"))
    (v1.path / "run.json").write_text('{"schema_version": 2, "task": "forecast"}')
    with pytest.raises(CheckpointError, match=r"run.json was written by a newer greentune"):
        v1.info  # noqa: B018
    (v1.path / "metrics.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"metrics.json is damaged"):
        v1.metrics  # noqa: B018
    assert read_status(v1.path) is None  # supervisors do not fail on it


def test_variants_are_found_by_method_name_or_path(v1, tmp_path):
    variant = tmp_path / "v1-int8-dynamic"
    shutil.copytree(v1.path, variant)
    (v1.path / "compression.json").write_text(
        json.dumps({"variants": [{"name": "v1-int8-dynamic", "run": str(variant)}]})
    )
    assert v1.variant(None) == v1 and v1.variant("fp32") == v1
    assert v1.variant("int8-dynamic").path == variant
    assert v1.variant("v1-int8-dynamic").path == variant
    assert v1.variant(str(variant)).path == variant
    assert list(v1.variants()) == ["v1-int8-dynamic"]
    with pytest.raises(CheckpointError, match=r"no variant 'onnx'; variants: fp32, v1-int8"):
        v1.variant("onnx")


def test_predictions_and_metrics_are_written_atomically(tmp_path):
    run = RunDir(tmp_path)
    run.write_predictions(pd.DataFrame({"model": ["a"], "y_pred": [1.0]}))
    metrics = RunMetrics("forecast", "a", {"a": ModelResult({"mape": float("nan")})})
    run.write_metrics(metrics)
    assert json.loads((tmp_path / "metrics.json").read_text())["test"]["a"]["mape"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "predictions.parquet"]


def test_an_old_classification_metrics_file_round_trips_too():
    """Written before the API: its training section had six keys and a null; all survive."""
    raw = {
        "schema_version": 1,
        "task": "classify",
        "model": "minilm-lora",
        "labels": ["a", "b"],
        "test": {
            "minilm-lora": {
                "accuracy": 0.5,
                "macro_f1": 0.4,
                "confusion": [[1, 1], [0, 0]],
                "fit_s": 1.0,
                "predict_s": 0.1,
                "predictions": 2,
                "energy_windows": {"fit": {"train": 1.0}, "predict": {"test": 1.0}},
                "fit_wh": 0.1,
                "fit_g": None,
                "predict_wh": 0.0,
                "predict_g": None,
                "energy_wh": 0.1,
                "emissions_g": None,
                "wh_per_1k_predictions": 0.01,
                "g_per_1k_predictions": None,
                "macro_f1_per_kwh": 4000.0,
            },
            "majority_class": {"accuracy": 0.5, "macro_f1": 0.33, "confusion": [[2, 0], [0, 0]]},
        },
        "training": {
            "steps": 4,
            "train_s": 1.0,
            "samples_per_s": 8.0,
            "trainable_parameters": 10,
            "total_parameters": 20,
            "loss_curve": [0.7, 0.6, 0.5, 0.4],
            "a_future_key": {"x": 1},
        },
        "energy": {
            "kinds": ["model"],
            "carbon": None,
            "run_wh": 0.2,
            "run_g": None,
            "by_phase_wh": {"train": 0.2},
            "target": 0.02,
            "quality_metric": "macro_f1",
            "best": "minilm-lora",
            "greenest": "minilm-lora",
            "greenest_cost": "energy_wh",
            "energy_ratio_to_best": None,
        },
    }
    again = RunMetrics.from_dict(raw).to_dict()
    assert again == raw
    assert json.dumps(again) == json.dumps(raw)  # the same key order too
