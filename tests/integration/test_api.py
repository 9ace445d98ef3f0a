"""The Python API end to end: run -> RunDir -> Predictor, without the CLI.

What docs/api.md shows a notebook user, on tiny models: a run with a callback, its metrics and
energy as objects, predictions from a DataFrame (the same numbers as ``greentune predict``),
clear errors for bad frames, classification, variants, and a run directory from before the API.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import greentune as gt
from greentune.cli import app, commands, compress  # noqa: F401
from greentune.data.text import synthetic_incidents
from greentune.errors import CheckpointError, DataError
from greentune.tasks.classify import ClassifyPredictor
from greentune.tasks.forecast import ForecastPredictor
from tests.conftest import make_series, series_overrides

V1 = Path(__file__).resolve().parents[1] / "data" / "v1-forecast-run"


class CountSteps(gt.Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []
        self.validations = 0

    def on_step_end(self, state, loss):
        self.steps.append(state.step)

    def on_validation(self, state, val_loss):
        self.validations += 1
        return False


@pytest.fixture(scope="module")
def forecast(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    csv = tmp / "load.csv"
    make_series().to_csv(csv, index=False)
    cfg = gt.build_config(
        overrides=[
            *series_overrides(csv, tmp / "runs"),
            "train.epochs=2",
            "eval.baselines=[seasonal_naive_daily,seasonal_naive_weekly,linear]",
        ]
    )
    counter = CountSteps()
    run = gt.run(cfg, echo=lambda m: None, callbacks=[counter])
    return run, counter, csv


def test_run_returns_a_typed_run_directory(forecast):
    run, counter, _ = forecast
    assert isinstance(run, gt.RunDir) and run.status == "complete"
    metrics = run.metrics
    assert isinstance(metrics, gt.RunMetrics) and metrics.model == "tiny-bert-patch-lora"
    assert counter.steps == list(range(1, metrics.training.steps + 1))
    assert counter.validations == len(metrics.training.val_curve) == 3  # start + 2 epochs
    table = metrics.table()
    assert set(table.index) == {
        metrics.model,
        "seasonal_naive_daily",
        "seasonal_naive_weekly",
        "linear",
        "ensemble-mean",  # the network and linear, averaged
        "ensemble-weighted",  # the same members, weights fitted on validation
    }
    assert (table["energy_wh"] > 0).all()
    phases = run.energy_by_phase(command="run")
    assert {"data", "train", "test", "save", "baseline"} <= set(phases.index)
    assert phases["energy_wh"].sum() == pytest.approx(metrics.energy.run_wh)


def test_predict_from_a_dataframe_matches_the_cli(forecast, tmp_path):
    run, _, csv = forecast
    history = pd.read_csv(csv).iloc[:-24]  # the last day's load is unknown ...
    future = pd.read_csv(csv).iloc[-24:].assign(load_mw=np.nan)  # ... its temperature known
    frame = pd.concat([history, future], ignore_index=True)
    model = gt.Predictor.from_run(run)
    assert isinstance(model, ForecastPredictor) and model.info["variant"] == "fp32"
    out = model.predict(frame)
    assert list(out.columns[:3]) == ["origin", "time", "step"] and len(out) == 24
    assert {"load_mw_forecast", "load_mw_q0.1", "load_mw_q0.9"} <= set(out.columns)
    assert (out["load_mw_q0.1"] <= out["load_mw_q0.9"]).all()
    assert pd.Timestamp(out["time"].iloc[0]) == pd.Timestamp(frame["ts"].iloc[-24])
    path = tmp_path / "new.csv"
    frame.to_csv(path, index=False)
    result = CliRunner().invoke(
        app, ["predict", str(run.path), "--data", str(path), "--out", str(tmp_path / "f.csv")]
    )
    assert result.exit_code == 0, result.output
    cli = pd.read_csv(tmp_path / "f.csv")
    np.testing.assert_allclose(cli["load_mw_forecast"], out["load_mw_forecast"], rtol=1e-6)
    # a frame indexed by time works as well as one with the time column
    indexed = model.predict(frame.set_index(pd.to_datetime(frame.pop("ts"))))
    np.testing.assert_allclose(indexed["load_mw_forecast"], out["load_mw_forecast"])


def test_bad_frames_get_errors_that_name_the_column_or_row(forecast):
    _, _, csv = forecast
    model = gt.Predictor.from_run(forecast[0])
    frame = pd.read_csv(csv)
    with pytest.raises(DataError, match=r"the DataFrame: column\(s\) 'temp_c' named in the config"):
        model.predict(frame.drop(columns="temp_c"))
    with pytest.raises(DataError, match="needs 48 observed rows of 'load_mw' before the forecast"):
        model.predict(frame.iloc[:30].assign(load_mw=[*frame.load_mw[:6], *[np.nan] * 24]))
    bad = frame.astype({"load_mw": object})
    bad.loc[100, "load_mw"] = "n/a"
    with pytest.raises(DataError, match=r"column 'load_mw' is not numeric: row 101 holds 'n/a'"):
        model.predict(bad, source="meter-export")
    with pytest.raises(DataError, match="expected a pandas DataFrame, got list"):
        model.predict([1, 2, 3])
    # rows every 2 h for a run trained on hours: its 48 steps of context would be 4 days
    with pytest.raises(
        DataError, match=r"rows every 2 h, but this run was trained on rows every 1 h"
    ):
        model.predict(frame.iloc[::2])
    infinite = frame.copy()
    infinite.loc[len(frame) - 5, "load_mw"] = np.inf
    with pytest.raises(DataError, match=r"'load_mw'.*inf"):
        model.predict(infinite)


def test_a_model_trained_for_midnight_origins_refuses_others(tmp_path):
    csv = tmp_path / "load.csv"
    make_series().to_csv(csv, index=False)
    cfg = gt.build_config(
        overrides=[
            *series_overrides(csv, tmp_path / "runs"),
            "data.match_origins=true",
            "train.epochs=1",
            "eval.baselines=[linear]",
            "eval.ensembles=[]",
        ]
    )
    run = gt.run(cfg, echo=lambda m: None)
    assert "data.match_origins: training (26) and validation (6)" in run.log_path.read_text()
    model = gt.Predictor.from_run(run)
    frame = pd.read_csv(csv)  # hours, ending at 23:00

    def ahead(f: pd.DataFrame) -> pd.DataFrame:  # the last day's load unknown: forecast it
        return f.assign(load_mw=[*f.load_mw[:-24], *[np.nan] * 24])

    assert len(model.predict(ahead(frame))) == 24  # from midnight
    with pytest.raises(DataError, match=r"start at 2021-02-11 19:00:00, but this model was"):
        model.predict(ahead(frame.iloc[:-5]))


def test_evaluate_through_the_task_rescores_the_same(forecast):
    run, _, _ = forecast
    before = run.metrics.result.scores
    gt.TASKS.get("forecast").evaluate(run, gt.Predictor.from_run(run))
    assert run.metrics.result.scores == pytest.approx(before, rel=1e-9)


def test_a_v1_run_directory_predicts_its_own_test_windows(tmp_path):
    """A run written before the API: the Predictor reproduces its stored test predictions."""
    run = shutil.copytree(V1, tmp_path / "v1")
    model = gt.Predictor.from_run(run)
    out = model.predict(make_series(), origins="daily")
    stored = gt.RunDir.open(run).predictions
    stored = stored[stored.model == "tiny-bert-patch-lora"]
    merged = stored.merge(
        out.assign(origin=pd.to_datetime(out.origin), time=pd.to_datetime(out.time)),
        on=["origin", "time"],
    )
    assert len(merged) == len(stored) == 6 * 24
    np.testing.assert_allclose(merged["y_pred"], merged["load_mw_forecast"], rtol=1e-5)
    np.testing.assert_allclose(merged["q0.9"], merged["load_mw_q0.9"], rtol=1e-5)
    np.testing.assert_allclose(merged["y_true"], merged["load_mw_actual"])


def test_compressed_variants_load_by_name(forecast):
    run, _, _ = forecast
    result = CliRunner().invoke(
        app, ["compress", str(run.path), "-m", "int8-dynamic", "--rounds", "1"]
    )
    assert result.exit_code == 0, result.output
    fp32 = gt.Predictor.from_run(run)
    int8 = gt.Predictor.from_run(run, variant="int8-dynamic")
    assert int8.variant == "int8-dynamic" and int8.run.path.name.endswith("-int8-dynamic")
    frame = make_series()
    a, b = fp32.predict(frame, origins="daily"), int8.predict(frame, origins="daily")
    np.testing.assert_allclose(a["load_mw_forecast"], b["load_mw_forecast"], rtol=0.05)
    with pytest.raises(CheckpointError, match=r"no variant 'onnx'; variants: fp32, r-int8"):
        gt.Predictor.from_run(run, variant="onnx")


def test_a_served_variant_with_options_is_reloaded_as_itself(forecast):
    """Its method (prune) names another variant (the default prune); a reload without a
    variant loads the one asked for again."""
    from greentune.serve.engine import Engine, load

    run, _, _ = forecast
    result = CliRunner().invoke(
        app, ["compress", str(run.path), "-m", "prune:sparsity=0.7", "--rounds", "1"]
    )
    assert result.exit_code == 0, result.output
    engine = Engine(load(run.path, "prune-sparsity0.7"))
    assert engine.current.variant == "prune"
    again = engine.reload()
    assert again.variant_spec == "prune-sparsity0.7"
    assert again.version == engine.current.version == load(run.path, "prune-sparsity0.7").version


def test_classify_predictor_gives_labels_and_probabilities(tmp_path):
    path = tmp_path / "t.csv"
    synthetic_incidents(160, seed=1).to_csv(path, index=False)
    cfg = gt.build_config(
        overrides=[
            "task=classify",
            "model.backbone=tiny-bert",
            "train.epochs=2",
            "text.max_length=32",
            f"text.path={path}",
            f"output_dir={tmp_path}/runs",
            "name=c",
            "energy.enabled=false",
        ]
    )
    run = gt.run(cfg, echo=lambda m: None)
    assert run.metrics.energy is None and not (run.path / "energy.json").exists()
    model = gt.Predictor.from_run(run)
    assert isinstance(model, ClassifyPredictor)
    texts = pd.DataFrame({"text": ["feeder 12 tripped", "meter reading late"]}, index=[7, 9])
    out = model.predict(texts)
    assert list(out.index) == [7, 9] and list(out.columns[:2]) == ["label", "probability"]
    probs = out[[f"p_{name}" for name in model.labels]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert list(out["label"]) == [model.labels[i] for i in probs.argmax(axis=1)]
    assert model.predict(["feeder 12 tripped"])["label"].iloc[0] == out["label"].iloc[0]
    with pytest.raises(DataError, match=r"text column 'text' not found; columns are: body"):
        model.predict(pd.DataFrame({"body": ["x"]}))
    with pytest.raises(DataError, match=r"row 2 of the texts holds None"):
        model.predict(["ok", None])
    with pytest.raises(
        CheckpointError, match="is a classify run; ForecastPredictor loads forecast"
    ):
        ForecastPredictor.from_run(run)


def test_the_documented_tour_runs(tmp_path):
    """examples/api_tour.py is what docs/api.md shows; it must keep working."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "examples/api_tour.py", "--tiny", "--out", str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "run: " in done.stdout and "complete" in done.stdout
    assert "greenest within 2 % of the best:" in done.stdout
    assert "next-day MAPE" in done.stdout
    assert "Warning" not in done.stderr  # quiet_libraries keeps a notebook clean


def test_input_offsets_are_put_on_the_runs_clock():
    """Trained on a year of +10:00/+11:00 stamps without data.timezone (read as UTC), given a
    summer week all at +11:00: its calendar features must be computed in UTC as the run's."""
    from types import SimpleNamespace

    def trained(start: str) -> SimpleNamespace:
        return SimpleNamespace(
            cfg=SimpleNamespace(data=SimpleNamespace(timezone=None)),
            run=SimpleNamespace(),  # a run's: what metrics.json says its data began at
            _trained=lambda: {"start": start},
        )

    fake = trained("2013-12-31 13:00:00+00:00")
    times = pd.date_range("2014-01-10 00:00", periods=3, freq="h", tz="Etc/GMT-11")
    frame = pd.DataFrame({"load": [1.0, 2.0, 3.0]}, index=times)
    out = ForecastPredictor._on_trained_clock(fake, frame, "week.csv")
    assert str(out.index.tz) == "UTC" and out.index[0].hour == 13
    with pytest.raises(DataError, match=r"week.csv: timestamps without a UTC offset, but this run"):
        ForecastPredictor._on_trained_clock(fake, frame.tz_localize(None), "week.csv")
    naive = trained("2014-01-01 00:00:00")  # naive training: the input's clock as given
    assert ForecastPredictor._on_trained_clock(naive, frame, "week.csv") is frame
