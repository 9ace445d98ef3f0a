"""Baselines on small synthetic hourly series: exact values, leakage and quantile shapes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from greentune.config import DataConfig
from greentune.data.validate import DataReport
from greentune.data.windows import ForecastData, WindowSet, build_forecast_data
from greentune.errors import ConfigError
from greentune.evaluate.baselines import (
    BASELINES,
    run_baseline,
    seasonal_lags,
    steps_per,
)
from greentune.evaluate.metrics import forecast_metrics, mase_scale

NAMES = ["lightgbm", "linear", "seasonal_naive_daily", "seasonal_naive_weekly"]
QUANTILES = (0.1, 0.5, 0.9)
N_ROWS = 24 * 7 * 10  # ten weeks hourly: train 6 weeks, validation and test 2 weeks each
CFG = DataConfig(
    source="csv",
    target="y",
    covariates=("temp",),
    calendar=True,
    temperature_col="temp",
    context_length=48,
    horizon=24,
    val="0.2",
    test="0.2",
    eval_origins="daily",
    val_origins="24",
)


def _data(columns: dict[str, np.ndarray], cfg: DataConfig = CFG) -> ForecastData:
    # a Monday midnight start, so position 24 * k is midnight of day k
    index = pd.date_range("2021-01-04", periods=N_ROWS, freq="h", name="time")
    return build_forecast_data(pd.DataFrame(columns, index=index), cfg, DataReport("synthetic"))


def _truth(data: ForecastData, origins: np.ndarray) -> np.ndarray:
    return data.target_values()[origins[:, None] + np.arange(data.horizon)]


def _temperature(rng: np.random.Generator) -> np.ndarray:
    """Daily cycle plus day-to-day weather anomalies, so demand is not simply periodic."""
    t = np.arange(N_ROWS)
    anomaly = np.repeat(rng.normal(0.0, 6.0, N_ROWS // 24), 24)
    return 18.0 + 5.0 * np.sin(2 * np.pi * (t % 24 - 9) / 24) + anomaly


@pytest.fixture(scope="module")
def daily() -> ForecastData:
    """A target that repeats every day exactly (an arbitrary 24-value profile)."""
    rng = np.random.default_rng(1)
    profile = rng.uniform(50.0, 150.0, 24)
    return _data({"y": np.tile(profile, N_ROWS // 24), "temp": rng.normal(15.0, 5.0, N_ROWS)})


@pytest.fixture(scope="module")
def noisy() -> ForecastData:
    """Daily and weekly shape + U-shaped temperature response + noise."""
    rng = np.random.default_rng(2)
    t = np.arange(N_ROWS)
    temp = _temperature(rng)
    y = (
        100.0
        + 10.0 * np.sin(2 * np.pi * (t % 24) / 24)
        + 8.0 * ((t // 24) % 7 < 5)
        + 3.0 * np.maximum(temp - 22.0, 0.0)
        + 2.0 * np.maximum(14.0 - temp, 0.0)
        + rng.normal(0.0, 1.0, N_ROWS)
    )
    return _data({"y": y, "temp": temp})


def test_registry_lists_the_four_baselines() -> None:
    assert set(NAMES) <= set(BASELINES.names())
    with pytest.raises(ConfigError, match="seasonal_naive_daily"):
        BASELINES.get("naive")


def test_seasonal_lags_and_steps() -> None:
    assert seasonal_lags(24, 24).tolist() == [24] * 24
    assert seasonal_lags(36, 24).tolist() == [24] * 24 + [48] * 12
    assert seasonal_lags(5, 168).tolist() == [168] * 5
    assert seasonal_lags(3, 1).tolist() == [1, 2, 3]


def test_daily_naive_is_exact_on_a_daily_periodic_series(daily: ForecastData) -> None:
    assert steps_per(daily, "1D") == 24
    origins = daily.test.origins
    assert origins.tolist() == list(range(1344, N_ROWS - 23, 24))  # test starts at 0.8 * n
    fc = run_baseline("seasonal_naive_daily", daily, origins, ())
    y = daily.target_values()
    assert fc.point.shape == (len(origins), 24, 1)
    # hand-computed: the 24 values of the day before the first origin
    np.testing.assert_array_equal(fc.point[0, :, 0], y[1320:1344, 0])
    metrics = forecast_metrics(_truth(daily, origins), fc.point, mase_scale(y[:1008], 24))
    assert metrics["mae"] == 0.0
    assert metrics["mape"] == 0.0
    assert fc.quantiles is None


def test_weekly_naive_takes_the_value_seven_days_earlier(noisy: ForecastData) -> None:
    origins = noisy.test.origins
    fc = run_baseline("seasonal_naive_weekly", noisy, origins, ())
    y = noisy.target_values()[:, 0]
    assert origins[2] == 1392
    assert fc.point[2, 5, 0] == y[1392 + 5 - 168]
    np.testing.assert_array_equal(fc.point[:, :, 0], y[origins[:, None] + np.arange(24) - 168])


def test_linear_recovers_a_linear_function_of_a_covariate() -> None:
    rng = np.random.default_rng(3)
    temp = rng.normal(15.0, 5.0, N_ROWS)
    data = _data({"y": 2.0 * temp + 5.0, "temp": temp})
    origins = data.test.origins
    fc = run_baseline("linear", data, origins, ())
    y = _truth(data, origins)
    metrics = forecast_metrics(y, fc.point, mase_scale(data.target_values()[:1008], 24))
    assert metrics["mae"] < 0.005 * np.std(y)  # ridge shrinks a little; the spread is ~10
    assert metrics["mape"] < 0.1  # percent
    assert fc.fit_s > 0.0


def test_lightgbm_beats_weekly_naive_with_a_temperature_effect(noisy: ForecastData) -> None:
    origins = noisy.test.origins
    y = _truth(noisy, origins)
    scale = mase_scale(noisy.target_values()[:1008], 24)
    mae = {
        name: forecast_metrics(y, run_baseline(name, noisy, origins, ()).point, scale)["mae"]
        for name in ("lightgbm", "seasonal_naive_weekly", "linear")
    }
    assert mae["lightgbm"] < 0.6 * mae["seasonal_naive_weekly"]
    assert mae["linear"] < mae["seasonal_naive_weekly"]


@pytest.mark.parametrize("name", [*NAMES, "linear_clock"])
def test_quantiles_have_shapes_and_order(noisy: ForecastData, name: str) -> None:
    origins = noisy.test.origins
    fc = run_baseline(name, noisy, origins, QUANTILES)
    assert fc.quantiles is not None and sorted(fc.quantiles) == list(QUANTILES)
    for pred in fc.quantiles.values():
        assert pred.shape == (len(origins), 24, 1)
        assert np.isfinite(pred).all()
    lo, mid, hi = (fc.quantiles[q] for q in QUANTILES)
    assert (lo <= mid).all() and (mid <= hi).all()
    assert lo.mean() < mid.mean() < hi.mean()
    assert fc.fit_s >= 0.0 and fc.predict_s >= 0.0


@pytest.mark.parametrize("name", ["linear", "linear_clock", "lightgbm"])
def test_fitting_never_reads_test_targets(noisy: ForecastData, name: str) -> None:
    frame = noisy.frame.copy()
    frame.iloc[noisy.test_start :, 0] = 1e6
    scaled = noisy.scaled.copy()
    scaled[noisy.test_start :, 0] = 1e6
    # a cache of its own: the fits cached on ``noisy`` (ridge, LightGBM) would hide a leak
    corrupt = dataclasses.replace(noisy, frame=frame, scaled=scaled, cache={})
    val = noisy.val.origins
    clean_fc = run_baseline(name, noisy, val, QUANTILES)
    bad_fc = run_baseline(name, corrupt, val, QUANTILES)
    np.testing.assert_allclose(bad_fc.point, clean_fc.point, rtol=1e-9, atol=1e-9)
    assert clean_fc.quantiles is not None and bad_fc.quantiles is not None
    for q in QUANTILES:
        np.testing.assert_allclose(bad_fc.quantiles[q], clean_fc.quantiles[q], rtol=1e-9)
    # the corruption is real: forecasts from test origins see it in their history
    test = noisy.test.origins[1:]
    assert not np.allclose(
        run_baseline(name, corrupt, test, ()).point, run_baseline(name, noisy, test, ()).point
    )


def test_lightgbm_keeps_the_design_with_the_lowest_validation_error(noisy: ForecastData) -> None:
    from greentune.evaluate import lgbm

    tried = lgbm.candidates(noisy, 0)
    assert sorted(f.form for f in tried) == ["level", "level", "ratio", "timestamp"]
    assert {f.size.get("num_leaves", 63) for f in tried if f.form == "level"} == {15, 63}
    chosen = lgbm.kept_fit(dataclasses.replace(noisy, cache={}), 0)
    assert chosen.val_mae == min(f.val_mae for f in tried)
    val = noisy.val.origins
    y = noisy.target_values()[val[:, None] + np.arange(noisy.horizon), 0]
    for fit in tried:  # each score is that model's MAE on the validation windows
        got = np.mean(np.abs(lgbm.predict_target(noisy, 0, fit, val) - y))
        assert fit.val_mae == pytest.approx(got, rel=1e-9), fit.form


def test_multivariate_targets() -> None:
    rng = np.random.default_rng(4)
    temp = _temperature(rng)
    cfg = dataclasses.replace(
        CFG, target=None, covariates=None, temperature_col=None, multivariate=True
    )
    data = _data({"load": 100.0 + 2.0 * temp + rng.normal(0, 1, N_ROWS), "temp": temp}, cfg)
    assert data.target_cols == ["load", "temp"]
    origins = data.test.origins
    y = data.target_values()
    for name in NAMES:
        fc = run_baseline(name, data, origins, (0.1, 0.9))
        assert fc.point.shape == (len(origins), 24, 2)
        assert fc.quantiles is not None and fc.quantiles[0.1].shape == (len(origins), 24, 2)
        assert np.isfinite(fc.point).all()
    naive = run_baseline("seasonal_naive_daily", data, origins, ())
    np.testing.assert_array_equal(naive.point[3], y[origins[3] - 24 : origins[3]])


def test_each_design_lightgbm_tried_forecasts_as_itself(noisy: ForecastData) -> None:
    from greentune.evaluate import lgbm

    data = dataclasses.replace(noisy, cache={})
    test = data.test.origins
    designs = lgbm.design_forecasts(data, test, QUANTILES)
    tried = lgbm.tried(data, 0)
    # the kept design (lowest validation MAE) is the lightgbm row's; the others are named by
    # their form and tree size, in the order they were tried
    assert tried[0].val_mae == min(f.val_mae for f in tried)
    assert list(designs) == [lgbm.design_label(f) for f in tried[1:]]
    kept = run_baseline("lightgbm", data, test, QUANTILES)
    np.testing.assert_allclose(kept.point[..., 0], lgbm.predict_target(data, 0, tried[0], test))
    for fit in tried[1:]:
        fc = designs[lgbm.design_label(fit)]
        np.testing.assert_allclose(
            fc.point[..., 0], lgbm.predict_target(data, 0, fit, test), rtol=1e-12
        )
        assert not np.allclose(fc.point, kept.point)
        assert fc.quantiles is not None and set(fc.quantiles) == set(QUANTILES)
        assert (fc.quantiles[0.1] <= fc.quantiles[0.9]).all()


@pytest.mark.parametrize("designs", [True, False])
def test_the_weighted_ensemble_takes_lightgbms_other_designs(
    noisy: ForecastData, designs: bool
) -> None:
    from greentune.config import build_config
    from greentune.evaluate import lgbm
    from greentune.results import ModelResult
    from greentune.tasks.forecast.ensemble import ensemble_rows

    cfg = build_config(
        overrides=[
            "eval.ensembles=[mean,weighted]",
            "model.quantiles=[0.1,0.5,0.9]",
            f"eval.ensemble_designs={str(designs).lower()}",
        ]
    )
    data = dataclasses.replace(noisy, cache={})
    fcs = {
        split: {
            name: run_baseline(stand_in, data, origins, QUANTILES)
            for name, stand_in in (
                ("model", "seasonal_naive_weekly"),  # the network's stand-in
                ("linear", "linear"),
                ("lightgbm", "lightgbm"),
            )
        }
        for split, origins in (("val", data.val.origins), ("test", data.test.origins))
    }
    test = {m: (fc, ModelResult({}, fit_s=0.0, predict_s=0.0)) for m, fc in fcs["test"].items()}
    rows = ensemble_rows(cfg, data, 24, test, fcs["val"])
    others = [f"lightgbm:{lgbm.design_label(f)}" for f in lgbm.tried(data, 0)[1:]]
    assert len(others) == 3
    base = ["model", "linear", "lightgbm"]
    weighted = rows["ensemble-weighted"]
    assert weighted.info["members"] == (base + others if designs else base)
    assert np.array(weighted.info["weights_by_step"]).shape == (24, len(weighted.info["members"]))
    assert rows["ensemble-mean"].info["members"] == base  # four designs would outvote the rest
    mean = np.mean([fcs["test"][m].point for m in base], axis=0)
    np.testing.assert_allclose(rows["ensemble-mean"].forecast.point, mean, rtol=1e-12)
    assert weighted.forecast.quantiles is not None and set(weighted.forecast.quantiles) == set(
        QUANTILES
    )
    # the weights are NNLS on the validation forecasts of exactly those members
    from greentune.evaluate.baselines import horizon_positions
    from greentune.evaluate.ensemble import combine, fit_weights

    extra = {
        split: {f"lightgbm:{k}": fc for k, fc in lgbm.design_forecasts(data, o, QUANTILES).items()}
        for split, o in (("val", data.val.origins), ("test", data.test.origins))
    }
    use = {s: {**fcs[s], **(extra[s] if designs else {})} for s in ("val", "test")}
    y_val = data.target_values()[horizon_positions(data.val.origins, data.horizon)]
    w = fit_weights(use["val"], y_val)
    np.testing.assert_allclose(weighted.info["weights_by_step"], np.round(w, 4))
    want = combine("weighted", use["test"], w).point
    np.testing.assert_allclose(weighted.forecast.point, want, rtol=1e-12)


def test_linear_clock_is_the_ridge_of_each_origin_time(noisy: ForecastData) -> None:
    from greentune.evaluate.ridge import design_matrix, fit_linear_at

    # at midnight: the ridge a run with data.match_origins trains (midnight windows only)
    matched = _data(
        {"y": noisy.frame["y"].to_numpy(), "temp": noisy.frame["temp"].to_numpy()},
        dataclasses.replace(CFG, match_origins=True),
    )
    test = noisy.test.origins
    np.testing.assert_allclose(
        run_baseline("linear_clock", noisy, test, ()).point,
        run_baseline("linear", matched, test, ()).point,
        rtol=1e-9,
    )
    # at 06:00 and midnight together: each origin by the ridge of its own time
    mixed = np.sort(np.concatenate([test[:3], test[:3] + 6]))
    got = run_baseline("linear_clock", noisy, mixed, ()).point
    six = fit_linear_at(noisy, 360)
    x, _ = design_matrix(noisy, mixed[1::2])
    want = noisy.unscale_target(six.predict_scaled(x).reshape(3, 24, 1))
    np.testing.assert_allclose(got[1::2], want, rtol=1e-9)
    assert not np.allclose(got[1::2], run_baseline("linear", noisy, mixed[1::2], ()).point)


def test_linear_clock_on_channel_independent_data_shares_each_clock_ridge(
    noisy: ForecastData,
) -> None:
    """Several series, one ridge per clock time shared by them (each reading its own history):
    at midnight, the channel-independent ridge ``data.match_origins`` trains."""
    rng = np.random.default_rng(5)
    y = noisy.target_values()[:, 0]
    columns = {"a": y, "b": 0.5 * y + rng.normal(0.0, 2.0, N_ROWS)}
    ci = dataclasses.replace(
        CFG, multivariate=True, channel_independent=True, covariates=(), temperature_col=None
    )
    folded = _data(columns, ci)
    matched = _data(columns, dataclasses.replace(ci, match_origins=True))
    test = folded.test.origins
    got = run_baseline("linear_clock", folded, test, ()).point
    assert got.shape == (len(test), folded.horizon, 2)
    np.testing.assert_allclose(got, run_baseline("linear", matched, test, ()).point, rtol=1e-9)


def test_linear_clock_is_left_out_where_it_would_not_add_a_model(noisy: ForecastData) -> None:
    from greentune.evaluate.baselines import left_out

    assert left_out("linear_clock", noisy) is None  # hourly, one target: it runs
    assert left_out("linear", noisy) is None
    index = pd.date_range("2021-01-04", periods=N_ROWS, freq="D", name="time")
    days = dataclasses.replace(noisy, frame=noisy.frame.set_axis(index))
    assert left_out("linear_clock", days) == (
        "every origin is at the same clock time with 1 days 00:00:00 steps: it would be linear"
    )
    # validation that ends before a window from 06:00 fits: a ridge for 06:00 cannot be
    # validated, so forecasting validation at 06:00 (the ensembles' choice) is left out
    start = noisy.val_start // 24 * 24  # a midnight
    short = dataclasses.replace(
        noisy,
        val_start=start,
        test_start=start + noisy.horizon + 3,  # validation windows from 00:00 to 03:00
        val=WindowSet("val", np.array([start, start + 6])),
        test=WindowSet("test", np.array([start])),
    )
    assert left_out("linear_clock", short) == (
        "synthetic: no complete validation window starts at 06:00 for a ridge of that clock "
        "time; use more data or leave linear_clock out of eval.baselines"
    )
    at_midnight = dataclasses.replace(short, val=WindowSet("val", np.array([start])))
    assert left_out("linear_clock", at_midnight) is None


def test_linear_clock_is_a_default_baseline_and_member() -> None:
    from greentune.config import build_config
    from greentune.tasks.forecast.ensemble import ensemble_members

    cfg = build_config()
    assert "linear_clock" in cfg.eval.baselines
    assert ensemble_members(cfg) == ["model", "linear", "lightgbm", "linear_clock"]
