"""A greentune forecasting run as the scheduler's carbon forecaster."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from greentune.cli import app, commands  # noqa: F401
from greentune.errors import ScheduleError
from greentune.schedule.forecast import make_forecaster
from tests.conftest import TINY, make_series

runner = CliRunner()


@pytest.fixture(scope="module")
def carbon_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("carbon")
    series = make_series(days=30).rename(columns={"load_mw": "intensity"})
    series[["ts", "intensity"]].to_csv(tmp / "trace.csv", index=False)
    args = [
        "data.source=csv",
        f"data.path={tmp / 'trace.csv'}",
        "data.time_col=ts",
        "data.target=intensity",
        "data.context_length=48",
        "data.horizon=24",
        "data.val=5D",
        "data.test=5D",
        "data.train_stride=3",
        "model.patch_len=12",
        "train.epochs=1",
        "eval.baselines=[seasonal_naive_daily]",
        f"output_dir={tmp / 'runs'}",
        "name=carbon",
        *TINY,
    ]
    result = runner.invoke(app, ["run", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return tmp / "runs" / "carbon", series


def test_forecasts_recursively_beyond_the_runs_horizon(carbon_run):
    run, series = carbon_run
    forecaster = make_forecaster(f"greentune:{run}")
    assert forecaster.name == f"greentune:{run}" and not forecaster.uses_future
    times = pd.DatetimeIndex(pd.to_datetime(series["ts"]).dt.tz_localize("UTC"))
    values = series["intensity"].to_numpy(float)
    issue = 24 * 20
    out = forecaster.predict(values, times, issue, 60)  # 24 + 24 + 12: three calls
    assert out.shape == (60,) and np.isfinite(out).all()
    truth = values[issue : issue + 60]
    assert np.mean(np.abs(out - truth) / truth) < 0.25  # a daily cycle it has learned
    # the first day comes from the history alone: the same as one predict call
    np.testing.assert_allclose(forecaster.predict(values, times, issue, 24), out[:24])


def test_refusals(carbon_run, tmp_path):
    run, _ = carbon_run
    forecaster = make_forecaster(f"greentune:{run}")
    half_hourly = pd.date_range("2021-01-04", periods=24 * 40, freq="30min", tz="UTC")
    with pytest.raises(
        ScheduleError, match=r"trained on data every 0 days 01:00:00; set schedule.slot"
    ):
        forecaster.predict(np.full(len(half_hourly), 100.0), half_hourly, 24 * 20, 24)
    with pytest.raises(ScheduleError, match="is not a run directory"):
        make_forecaster(f"greentune:{tmp_path}")


def test_the_model_is_loaded_once_for_every_recursive_step(carbon_run, monkeypatch):
    from greentune.tasks.forecast import ForecastPredictor

    run, series = carbon_run
    loads: list[str] = []
    original = ForecastPredictor.load.__func__

    def counting(cls, run_dir):
        loads.append(str(run_dir))
        return original(cls, run_dir)

    monkeypatch.setattr(ForecastPredictor, "load", classmethod(counting))
    forecaster = make_forecaster(f"greentune:{run}")
    times = pd.DatetimeIndex(pd.to_datetime(series["ts"]).dt.tz_localize("UTC"))
    values = series["intensity"].to_numpy(float)
    forecaster.predict(values, times, 24 * 20, 72)  # three recursive calls
    forecaster.predict(values, times, 24 * 21, 24)
    assert loads == [str(run)]


def test_a_kept_row_of_the_run_forecasts_instead_of_its_network(carbon_run):
    run, series = carbon_run
    forecaster = make_forecaster(f"greentune:{run}@seasonal_naive_daily")
    assert forecaster.name == f"greentune:{run}@seasonal_naive_daily"
    times = pd.DatetimeIndex(pd.to_datetime(series["ts"]).dt.tz_localize("UTC"))
    values = series["intensity"].to_numpy(float)
    issue = 24 * 20
    out = forecaster.predict(values, times, issue, 48)
    # the daily naive repeats the last observed day, and then its own forecast of it
    np.testing.assert_array_equal(out, np.tile(values[issue - 24 : issue], 2))
    with pytest.raises(ScheduleError, match=r"greentune:.*@lightgbm: .*no row 'lightgbm'"):
        make_forecaster(f"greentune:{run}@lightgbm")


def test_a_run_folder_with_an_at_sign_is_a_run_not_a_row(carbon_run, tmp_path):
    import shutil

    run, _ = carbon_run
    copy = tmp_path / "carbon@2"
    shutil.copytree(run, copy)
    forecaster = make_forecaster(f"greentune:{copy}")
    assert forecaster.name == f"greentune:{copy}" and forecaster.predictor.row is None
    with pytest.raises(ScheduleError, match=r"needs a run: greentune:RUN_DIR\[@ROW\]"):
        make_forecaster(f"greentune:{run}@")


def test_an_ensemble_of_runs_forecasts_carbon_intensity(carbon_run, tmp_path):
    """The network and its daily naive, averaged (greentune ensemble): the mean of the two
    forecasters, step by step."""
    from greentune.tasks.forecast.ensemble_runs import ensemble_runs

    run, series = carbon_run
    ens = ensemble_runs([str(run), f"{run}:seasonal_naive_daily"], tmp_path / "ens", ("mean",))
    forecaster = make_forecaster(f"greentune:{ens.path}@ensemble-mean")
    assert forecaster.name == f"greentune:{ens.path}@ensemble-mean"
    times = pd.DatetimeIndex(pd.to_datetime(series["ts"]).dt.tz_localize("UTC"))
    values = series["intensity"].to_numpy(float)
    issue = 24 * 20
    out = forecaster.predict(values, times, issue, 24)
    network = make_forecaster(f"greentune:{run}").predict(values, times, issue, 24)
    np.testing.assert_allclose(out, (network + values[issue - 24 : issue]) / 2, rtol=1e-6)
    # an ensemble whose member is that ensemble: the scheduler reads the innermost data layout
    nested = ensemble_runs([f"{ens.path}:ensemble-mean", str(run)], tmp_path / "nested", ("mean",))
    inner = make_forecaster(f"greentune:{nested.path}").predict(values, times, issue, 24)
    np.testing.assert_allclose(inner, (out + network) / 2, rtol=1e-6)
