"""A forecasting run keeps its fitted baselines and ensembles (``rows/``): ``predict --row`` and
``Predictor.from_run(row=...)`` forecast the run's test windows exactly as its table scored them,
and every refusal names what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import greentune as gt
from greentune.errors import CheckpointError, ConfigError
from greentune.tasks.forecast.rows import ROWS_DIR, RowSet
from tests.conftest import cli, make_series, series_overrides, tiny_classify_run

BASELINES = ["seasonal_naive_daily", "linear", "linear_clock", "lightgbm"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> gt.RunDir:
    tmp = tmp_path_factory.mktemp("rows")
    make_series().to_csv(tmp / "load.csv", index=False)
    cfg = gt.build_config(
        overrides=[
            *series_overrides(tmp / "load.csv", tmp / "runs", "rows"),
            "train.epochs=1",
            f"eval.baselines=[{','.join(BASELINES)}]",
            "eval.ensembles=[mean,median,weighted]",
            "eval.ensemble_designs=true",
        ]
    )
    return gt.run(cfg, echo=lambda m: None)


def _test_rows(run: gt.RunDir, name: str) -> pd.DataFrame:
    saved = pd.read_parquet(run.path / "predictions.parquet")
    return saved[saved["model"] == name].reset_index(drop=True)


def test_every_kept_row_forecasts_the_test_windows_as_the_run_scored_them(run) -> None:
    kept = RowSet.load(run.path)
    assert kept is not None
    ensembles = ["ensemble-mean", "ensemble-median", "ensemble-weighted"]
    assert set(kept.rows) >= set(BASELINES) and list(kept.ensembles) == ensembles
    # the weighted ensemble weighs LightGBM's other designs too: they are kept as its members
    designs = [m for m in kept.ensembles["ensemble-weighted"].members if ":" in m]
    assert designs and set(designs) <= set(kept.rows)
    path = run.config.data.path
    for name in [*BASELINES, *ensembles]:
        expected = _test_rows(run, name)
        got = gt.Predictor.from_run(run.path, row=name).predict_file(path, origins="daily")
        got = got[got["origin"].isin(expected["origin"])].reset_index(drop=True)
        assert len(got) == len(expected) > 0, name
        # the baselines exactly; the ensembles weigh the network too, whose float32 forward
        # pass differs in the last bits with the batch it runs in
        rtol = 1e-12 if name in BASELINES else 1e-6
        for got_col, col in [("load_mw_forecast", "y_pred")] + [
            (f"load_mw_q{q}", f"q{q}") for q in ("0.1", "0.5", "0.9")
        ]:
            np.testing.assert_allclose(got[got_col], expected[col], rtol=rtol, err_msg=name)


def test_a_row_served_from_another_clock_time_adds_the_runs_kept_offsets(run) -> None:
    """From 14:00 a baseline forecasts as its own function does there, and its interval is the
    offsets per step the run calibrated for its test origins (benchmarks/clock_quantiles.py:
    calibrating at each clock time was not adopted)."""
    from greentune.data.windows import prepare_forecast_data
    from greentune.evaluate.baselines import run_baseline

    data = prepare_forecast_data(run.config.data)
    index = data.frame.index
    origin = int(np.flatnonzero(index.hour == 14)[-3])  # a test-range origin with its horizon
    raw = pd.read_csv(run.config.data.path)
    frame = raw.iloc[: origin + data.horizon].copy()
    frame.loc[frame.index[origin:], "load_mw"] = np.nan  # the horizon: temperature only
    kept = RowSet.load(run.path)
    for name in ("linear", "lightgbm", "seasonal_naive_daily"):
        got = gt.Predictor.from_run(run.path, row=name).predict(frame)
        want = run_baseline(name, data, np.array([origin]))
        np.testing.assert_allclose(got["load_mw_forecast"], want.point[0, :, 0], rtol=1e-12)
        for q, offsets in kept.rows[name].offsets.items():
            np.testing.assert_allclose(
                got[f"load_mw_q{q:g}"] - got["load_mw_forecast"], offsets[:, 0], atol=1e-9
            )


def test_recommended_and_the_network_by_name(run) -> None:
    metrics = run.metrics
    greenest = metrics.energy.greenest
    predictor = gt.Predictor.from_run(run.path, row="recommended")
    assert predictor.info["row"] == greenest
    assert predictor.row == (None if greenest == metrics.model else greenest)
    for name in ("model", metrics.model):
        net = gt.Predictor.from_run(run.path, row=name)
        assert net.row is None and net.info["row"] == metrics.model


def test_refusals_name_the_rows_and_what_to_do(run, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        gt.Predictor.from_run(run.path, row="nhits")
    text = str(err.value)
    assert "no row 'nhits'" in text and "ensemble-weighted" in text and "(the network)" in text
    # a run from before rows/ existed serves its network only, and says so
    old = tmp_path / "old"
    shutil.copytree(run.path, old)
    shutil.rmtree(old / ROWS_DIR)
    with pytest.raises(CheckpointError, match="keeps no fitted rows besides its network"):
        gt.Predictor.from_run(old, row="lightgbm")
    assert gt.Predictor.from_run(old).row is None
    # a damaged file is named
    broken = tmp_path / "broken"
    shutil.copytree(run.path, broken)
    (broken / ROWS_DIR / "rows.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"rows is damaged"):
        gt.Predictor.from_run(broken, row="lightgbm")
    raw = json.loads((run.path / ROWS_DIR / "rows.json").read_text())
    raw["rows"]["linear"]["kind"] = "spline"
    (broken / ROWS_DIR / "rows.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"damaged \(kind 'spline' is none of"):
        gt.Predictor.from_run(broken, row="lightgbm")


def test_a_clock_time_without_its_ridge_is_refused(run) -> None:
    frame = pd.read_csv(run.config.data.path)
    frame = frame.iloc[: len(frame) - 5].copy()
    frame.loc[frame.index[-24:], "load_mw"] = np.nan  # the horizon, from 19:00
    predictor = gt.Predictor.from_run(run.path, row="linear_clock")
    with pytest.raises(gt.DataError, match="linear_clock has a ridge for forecasts issued at"):
        predictor.predict(frame)
    # refused while preparing, before a served batch would hold it with others' requests
    with pytest.raises(gt.DataError, match="linear_clock has a ridge for forecasts issued at"):
        predictor.prepare(frame)
    # so is an ensemble that weighs it
    assert "linear_clock" in run.metrics.ensembles["ensemble-mean"]["members"]
    with pytest.raises(gt.DataError, match="linear_clock has a ridge"):
        gt.Predictor.from_run(run.path, row="ensemble-mean").prepare(frame)
    # the network and the other rows forecast from any clock time
    assert len(gt.Predictor.from_run(run.path, row="lightgbm").predict(frame)) == 24
    # a value missing in the week LightGBM reads (before the network's 48-step context) is
    # refused for it, not read as a missing lag; the network does not read it
    holed = frame.copy()
    holed.loc[holed.index[-24 - 100], "load_mw"] = np.nan
    with pytest.raises(gt.DataError, match=r"column 'load_mw' is missing at .* fill the value"):
        gt.Predictor.from_run(run.path, row="lightgbm").predict(holed)
    assert len(gt.Predictor.from_run(run.path).predict(holed)) == 24
    # LightGBM reads the week before the forecast: a shorter history is refused, not guessed
    with pytest.raises(gt.DataError, match=r"needs 168 observed rows .* \(lightgbm reads that"):
        gt.Predictor.from_run(run.path, row="lightgbm").predict(frame.iloc[-96:])


def test_predict_cli_takes_a_row_and_refuses_a_bad_one(run, tmp_path: Path) -> None:
    out = tmp_path / "f.csv"
    done = cli(
        "predict", str(run.path), "--data", str(run.config.data.path), "--out", str(out),
        "--origins", "daily", "--row", "ensemble-weighted",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "(row ensemble-weighted)" in done.stdout
    expected = _test_rows(run, "ensemble-weighted")
    got = pd.read_csv(out, parse_dates=["origin"])
    got = got[got["origin"].isin(expected["origin"])]
    np.testing.assert_allclose(got["load_mw_forecast"], expected["y_pred"], rtol=1e-6)
    bad = cli(
        "predict", str(run.path), "--data", str(run.config.data.path), "--out", str(out),
        "--row", "random_init",
    )  # fmt: skip
    assert bad.returncode == 2 and "no row 'random_init'" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr
    # serve refuses an unknown row before it binds a port, with the same message
    served = cli("serve", str(run.path), "--no-auth", "--row", "nhits")
    assert served.returncode == 2 and "no row 'nhits'" in served.stderr + served.stdout
    assert "Traceback" not in served.stderr
    # the printed table says how to forecast with the recommended row when it is not the network
    assert run.metrics.energy.greenest not in (None, run.metrics.model)
    shown = cli("evaluate", str(run.path))
    assert shown.returncode == 0, shown.stderr
    assert f"forecast with it: greentune predict {run.path} --row recommended" in shown.stdout


def _small_run(tmp: Path, name: str, *extra: str) -> gt.RunDir:
    make_series().to_csv(tmp / "load.csv", index=False)
    overrides = [*series_overrides(tmp / "load.csv", tmp / "runs", name), "train.epochs=1"]
    return gt.run(gt.build_config(overrides=[*overrides, *extra]), echo=lambda m: None)


def test_a_dp_run_keeps_only_the_rows_fitted_on_no_training_data(tmp_path: Path) -> None:
    run = _small_run(
        tmp_path,
        "dp",
        "eval.baselines=[seasonal_naive_daily,linear]",
        "eval.ensembles=[mean]",
        "eval.ensemble_members=[model,seasonal_naive_daily,linear]",
        "privacy.dp.noise_multiplier=1.0",
        "data.bounds={load_mw: [0, 400], temp_c: [-20, 50]}",
    )
    kept = RowSet.load(run.path)
    assert kept is not None and list(kept.rows) == ["seasonal_naive_daily"]
    # its quantiles are calibrated on training rows; every ensemble is a non-private reference
    assert kept.rows["seasonal_naive_daily"].offsets is None and kept.ensembles == {}
    with pytest.raises(ConfigError, match="in a DP run every row fitted on the training data"):
        gt.Predictor.from_run(run.path, row="linear")


def test_a_classification_run_refuses_a_row(tmp_path: Path) -> None:
    run = tiny_classify_run(tmp_path, 120, 0)
    with pytest.raises(ConfigError, match="predicts with its network only"):
        gt.Predictor.from_run(run.path, row="ensemble-mean")


def test_a_channel_independent_ridge_forecasts_each_target_as_the_run_did(tmp_path: Path) -> None:
    run = _small_run(
        tmp_path,
        "ci",
        "data.multivariate=true",
        "data.temperature_col=null",
        "data.channel_independent=true",
        "eval.baselines=[linear]",
        "eval.ensembles=[mean]",
    )
    saved = _test_rows(run, "linear")
    targets = list(saved["target"].unique())
    assert len(targets) == 2
    got = gt.Predictor.from_run(run.path, row="linear").predict_file(
        run.config.data.path, origins="daily"
    )
    got = got[got["origin"].isin(saved["origin"])].reset_index(drop=True)
    for target in targets:
        mine = saved[saved["target"] == target].reset_index(drop=True)
        np.testing.assert_allclose(got[f"{target}_forecast"], mine["y_pred"], rtol=1e-12)
