import numpy as np
import pandas as pd
import pytest

from greentune.config import DataConfig
from greentune.data.features import calendar_features, hinge_features, holiday_flags
from greentune.data.sources import RawTable
from greentune.data.validate import clean_frame
from greentune.data.windows import build_forecast_data, near_zero_warnings
from greentune.errors import ConfigError, DataError

BASE = dict(
    source="csv",
    time_col="ts",
    target="load_mw",
    covariates=("temp_c",),
    context_length=48,
    horizon=24,
    val="6D",
    test="6D",
    train_stride=1,
)


def build(series, **kw):
    cfg = DataConfig(**{**BASE, **kw})
    frame, report = clean_frame(RawTable(series, "load.csv"), cfg)
    return build_forecast_data(frame, cfg, report)


def test_splits_by_duration_and_daily_origins(tiny_series):
    d = build(tiny_series)
    n = len(tiny_series)  # 40 days of hours
    assert d.test_start == n - 6 * 24 and d.val_start == n - 12 * 24
    assert d.frame.index[d.test.origins[0]] == pd.Timestamp("2021-02-07")
    assert len(d.test) == 6 and all(d.frame.index[o].hour == 0 for o in d.test.origins)
    assert d.train.origins[0] == 48 and d.train.origins[-1] == d.val_start - 24
    assert len(d.train) == d.val_start - 24 - 48 + 1


def test_splits_by_fraction_and_date(tiny_series):
    d = build(tiny_series, val="0.1", test="0.2")
    n = len(tiny_series)
    assert d.test_start == n - round(0.2 * n) and d.val_start == d.test_start - round(0.1 * n)
    d2 = build(tiny_series, test="2021-02-01", val="2021-01-25")
    assert d2.frame.index[d2.test_start] == pd.Timestamp("2021-02-01")
    assert d2.frame.index[d2.val_start] == pd.Timestamp("2021-01-25")
    with pytest.raises(ConfigError, match=r"data.test='soon': give a fraction"):
        build(tiny_series, test="soon")


def test_scaler_uses_training_rows_only(tiny_series):
    d = build(tiny_series)
    train = d.frame.iloc[: d.val_start]
    assert d.scaler.mean[0] == pytest.approx(train.load_mw.mean())
    assert d.scaler.std[0] == pytest.approx(train.load_mw.std(ddof=0))
    assert d.scaler.mean[0] != pytest.approx(d.frame.load_mw.mean())


def test_generated_features_keep_their_own_scale(tiny_series):
    # a cooling hinge that moves once in training would get a z-score std near 0 and test
    # values in the thousands; calendar and hinge features are of order one already
    series = tiny_series.assign(temp_c=10.0)
    series.loc[5, "temp_c"] = 23.0  # one warm hour in training
    series.loc[len(series) - 30, "temp_c"] = 30.0  # a hot hour on test
    d = build(series, temperature_col="temp_c")
    col = d.columns.index("cdd_22")
    assert (d.scaler.mean[col], d.scaler.std[col]) == (0.0, 1.0)
    assert d.scaled[:, col].max() == pytest.approx((30.0 - 22.0) / 5.0)
    assert d.scaler.std[d.columns.index("temp_c")] != 1.0  # a covariate is z-scored


def test_batch_gathers_the_right_rows(tiny_series):
    d = build(tiny_series)
    o = d.test.origins[:2]
    b = d.batch(o)
    assert b["past"].shape == (2, 48, len(d.columns))
    assert b["future"].shape == (2, 24, len(d.known_cols)) and b["y"].shape == (2, 24, 1)
    y = d.unscale_target(b["y"])
    assert y[0, 0, 0] == pytest.approx(d.frame.load_mw.iloc[o[0]], rel=1e-5)
    assert d.unscale_target(b["past"][:, :, :1])[1, -1, 0] == pytest.approx(
        d.frame.load_mw.iloc[o[1] - 1], rel=1e-5
    )
    # known covariates: temp + calendar (6) + hinge (6); the target is not "known"
    assert d.known_cols[0] == "temp_c" and "load_mw" not in d.known_cols


def test_nan_targets_drop_windows_and_say_how_many(tiny_series):
    s = tiny_series.copy()
    s.loc[100, "load_mw"] = np.nan
    d = build(s)
    # every train window whose 48+24 rows cover row 100 is dropped: origins 77..148
    assert d.dropped_windows == {"train": 72}
    assert any("dropped windows with missing values: train 72" in n for n in d.report.notes)
    assert not np.isnan(d.scaled).any()


def test_too_little_data(tiny_series):
    with pytest.raises(
        DataError, match=r"too little data for windows of 48 context \+ 24 horizon steps"
    ):
        build(tiny_series.iloc[: 24 * 13])


def test_calendar_holidays_and_hinges():
    idx = pd.date_range("2014-11-03 18:00", periods=12, freq="6h", tz="Australia/Melbourne")
    cal = calendar_features(idx)
    assert cal.cal_hour_sin.iloc[1] == pytest.approx(0.0, abs=1e-12)  # midnight
    assert cal.cal_hour_cos.iloc[1] == pytest.approx(1.0)
    hol = holiday_flags(idx, "AU", "VIC")
    # Melbourne Cup day, Tuesday 4 November 2014, is a public holiday in Victoria only
    assert hol.tolist() == [0.0] + [1.0] * 4 + [0.0] * 7
    assert holiday_flags(idx, "AU", "NSW").sum() == 0
    h = hinge_features(pd.Series([10.0, 20.0, 36.0]))
    assert h.hdd_14.tolist() == [0.8, 0.0, 0.0]
    assert h.cdd_22.tolist() == [0.0, 0.0, 2.8] and h.cdd_34.tolist() == [0.0, 0.0, 0.4]
    with pytest.raises(ConfigError, match="data.country='XX' is not known"):
        holiday_flags(idx, "XX", None)


def test_embedded_default_split():
    from greentune.data.windows import prepare_forecast_data

    d = prepare_forecast_data(DataConfig())
    assert d.frame.index[d.test_start] == pd.Timestamp("2014-11-06", tz="Australia/Melbourne")
    assert d.frame.index[d.val_start] == pd.Timestamp("2014-09-11", tz="Australia/Melbourne")
    assert len(d.test) == 56 and "holiday" in d.known_cols and "cdd_22" in d.known_cols


def test_bounds_scaler_maps_public_ranges_and_fits_on_nothing(tiny_series):
    bounds = {"load_mw": (0.0, 400.0), "temp_c": (-20.0, 50.0)}
    data = build(tiny_series, scaler="bounds", bounds=bounds)
    i, j = data.columns.index("load_mw"), data.columns.index("temp_c")
    assert (data.scaler.mean[i], data.scaler.std[i]) == (200.0, 200.0)
    assert (data.scaler.mean[j], data.scaler.std[j]) == (15.0, 35.0)
    # generated features (calendar, hinges) are left as they are
    k = data.columns.index("cal_hour_sin")
    assert (data.scaler.mean[k], data.scaler.std[k]) == (0.0, 1.0)
    # the same scaler whatever the training rows hold
    shifted = tiny_series.assign(load_mw=tiny_series["load_mw"] * 2)
    again = build(shifted, scaler="bounds", bounds=bounds)
    np.testing.assert_array_equal(again.scaler.mean, data.scaler.mean)


def test_bounds_scaler_names_the_columns_without_a_range(tiny_series):
    with pytest.raises(DataError, match=r"needs a public range for temp_c; set data.bounds.temp_c"):
        build(tiny_series, scaler="bounds", bounds={"load_mw": (0.0, 400.0)})
    with pytest.raises(ConfigError, match=r"data.bounds.load_mw must be \[low, high\]"):
        DataConfig(**{**BASE, "bounds": {"load_mw": (5.0, 1.0)}})


def test_a_saved_scaler_rescales_the_inputs(tiny_series):
    from greentune.data.windows import Scaler, with_scaler

    d = build(tiny_series)
    saved = Scaler(d.scaler.mean + 1.0, d.scaler.std * 2.0)  # what an older run was fitted with
    again = with_scaler(d, saved)
    np.testing.assert_allclose(again.scaled, saved.transform(d.frame.to_numpy(float)), rtol=1e-6)
    assert again.scaler is saved and again.cache == {} and d.scaler is not saved


def test_matched_origins_train_and_validate_from_local_midnight_only(tiny_series):
    from greentune.evaluate.ridge import ridge_statistics

    every = build(tiny_series)
    d = build(tiny_series, match_origins=True)
    midnights = every.train.origins[every.frame.index[every.train.origins].hour == 0]
    np.testing.assert_array_equal(d.train.origins, midnights)
    assert len(d.val) == 6 and all(d.frame.index[o].hour == 0 for o in d.val.origins)
    np.testing.assert_array_equal(d.test.origins, every.test.origins)
    assert any("data.match_origins" in note for note in d.report.notes)
    # settings that do not apply are not chosen (nor written into config.yaml as chosen)
    assert any("validation origins every" in note for note in every.report.notes)
    assert not any("validation origins every" in note for note in d.report.notes)
    # the ridge sums over those windows only, not every origin
    assert ridge_statistics(d)["n"] == len(midnights)
    assert ridge_statistics(every)["n"] == len(every.train)


def test_matched_origins_need_daily_test_origins():
    with pytest.raises(ConfigError, match=r"data.match_origins .* data.eval_origins='1'"):
        DataConfig(**BASE, match_origins=True, eval_origins="1")


def test_near_zero_values_the_windows_score_are_warned_about(tiny_series):
    series = tiny_series.iloc[:-5].copy()  # ends at 18:00: the last day is no test window
    n = len(series)
    median = float(series["load_mw"].iloc[: n - 12 * 24].abs().median())
    series.loc[n - 1, "load_mw"] = 0.01 * median  # no window scores the partial last day
    series.loc[n - 20, "load_mw"] = -0.03 * median  # 23:00 the day before: scored
    series.loc[n - 30, "load_mw"] = 0.0  # scored, but MAPE leaves zeros out
    series.loc[n - 142, "load_mw"] = np.nan  # unscored (before the first test midnight)
    series.loc[n - 200, "load_mw"] = 0.05 * median  # an outage in validation
    series.loc[10, "load_mw"] = 0.0  # in training: not scored
    d = build(series)
    typical = float(np.median(np.abs(d.frame["load_mw"].to_numpy()[: d.val_start])))
    assert d.frame.index[n - 20].hour == 23 and n - 1 not in d.test.origins[:, None] + range(24)
    tail = "; MAPE divides by them, so they can outweigh every other window in MAPE and in a "
    tail += "choice made on it (eval.metric=mape, the default): check for a partial period or an "
    tail += "outage, or rank by sMAPE or MASE (eval.metric)"
    head = "observed value(s)"
    assert d.report.warnings == [
        f"validation: 1 scored value(s) of load_mw below 10 % of their typical training value "
        f"(first {d.frame.index[n - 200]}: load_mw {0.05 * median:.4g} against {typical:.4g})"
        + tail,
        f"test: 1 scored value(s) of load_mw below 10 % of their typical training value (first "
        f"{d.frame.index[n - 20]}: load_mw {-0.03 * median:.4g} against {typical:.4g})" + tail,
    ]
    assert not any(head in note for note in d.report.notes)


def test_near_zero_warnings_per_column_and_typical_value():
    assert build_free([np.nan, np.nan, 1.0, 0.0], {"validation": [2]}) == []  # no training value
    several = pd.DataFrame(
        {"a": [10.0, 10.0, 0.5, 10.0, 0.2], "b": [-4.0, 4.0, 4.0, 0.1, 4.0]},
        index=pd.RangeIndex(5),
    )
    warned = near_zero_warnings(several, 2, {"validation": np.array([2, 3]), "test": [4]}, 1)
    assert [w.split(" (first")[0] for w in warned] == [
        "validation: 2 scored value(s) of a, b below 10 % of their typical training value",
        "test: 1 scored value(s) of a below 10 % of their typical training value",
    ]
    assert "(first 2: a 0.5 against 10)" in warned[0]
    assert "(first 4: a 0.2 against 10)" in warned[1]
    # a training median of 0 (a meter that is off half the time): the mean is the typical value
    assert "against 10)" in build_free([0.0, 0.0, 0.0, 40.0, 0.4], {"test": [4]})[0]
    wide = pd.DataFrame({f"c{i}": [1.0, 1.0, 0.01] for i in range(7)})
    assert "of c0, c1, c2, c3, c4 and 2 more below" in near_zero_warnings(wide, 2, {"t": [2]}, 1)[0]


def build_free(values: list[float], scored: dict[str, list[int]]) -> list[str]:
    frame = pd.DataFrame({"y": values}, index=pd.RangeIndex(len(values)))
    return near_zero_warnings(frame, 2 if len(values) < 5 else 4, scored, 1)


def test_train_phase_test_starts_the_stride_at_the_tests_clock_time(tiny_series):
    late = tiny_series.iloc[5:].reset_index(drop=True)  # the file starts at 05:00
    start = build(late, train_stride=8, train_phase="start")
    aligned = build(late, train_stride=8)  # the default since 2026-12-08
    hours = lambda d: sorted(set(d.frame.index[d.train.origins].hour))  # noqa: E731
    assert hours(start) == [5, 13, 21]  # 48 steps of context from 05:00, every 8 hours
    assert hours(aligned) == [0, 8, 16]  # the test forecasts from midnight
    assert aligned.train.origins[0] == 51 and start.train.origins[0] == 48
    assert abs(len(aligned.train) - len(start.train)) <= 1
    np.testing.assert_array_equal(aligned.val.origins, start.val.origins)
    np.testing.assert_array_equal(aligned.test.origins, start.test.origins)
    # a stride of one, or origins that already line up, change nothing
    np.testing.assert_array_equal(
        build(late, train_phase="start").train.origins, build(late).train.origins
    )
    np.testing.assert_array_equal(
        build(tiny_series, train_stride=8, train_phase="start").train.origins,
        build(tiny_series, train_stride=8).train.origins,
    )


def test_train_phase_is_checked():
    with pytest.raises(ConfigError, match=r"data.train_phase='midnight': use 'start'"):
        DataConfig(**BASE, train_phase="midnight")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"covariates": (), "past_covariates": ("temp_c",)},
            r"data.temperature_col='temp_c' is a past covariate .* known only up to the "
            r"forecast origin",
        ),
        (
            {"covariates": ()},
            r"must also be a covariate \(data.covariates\).*covariates are: none; for no "
            r"degree hinges give the column an empty name",
        ),
        (
            {"covariates": (), "multivariate": True, "target": None},
            r"with data.multivariate every column is a target .* an empty name: .* train it "
            r"again without it",
        ),
    ],
)
def test_temperature_hinges_need_a_temperature_known_ahead(tiny_series, settings, message):
    """The hinges are read over the horizon: built from observed (past) temperatures they
    would hand the model the future it forecasts."""
    with pytest.raises(ConfigError, match=message):
        build(tiny_series, temperature_col="temp_c", **settings)
    d = build(tiny_series, temperature_col="temp_c")  # a covariate known ahead: fine
    assert any(c.startswith("hdd_") for c in d.known_cols)


def test_the_demos_temperature_default_is_not_applied_to_a_multivariate_run():
    from greentune.data.sources import resolve

    assert resolve(DataConfig(multivariate=True)).temperature_col is None
    assert resolve(DataConfig()).temperature_col == "Temperature"


def test_a_column_named_as_a_generated_feature_is_refused(tiny_series):
    """Two columns of one name would shift every channel after them."""
    frame = tiny_series.assign(holiday=0.0)
    with pytest.raises(DataError, match=r"column\(s\) 'holiday' take the name of a feature"):
        build(frame, covariates=("temp_c", "holiday"), country="DE")


def test_no_midnight_is_told_as_such_not_as_missing_values(tiny_series):
    """Hourly stamps on the half hour (a zone such as Asia/Kolkata): no local midnight."""
    half = tiny_series.assign(ts=pd.to_datetime(tiny_series.ts) + pd.Timedelta(minutes=30))
    with pytest.raises(DataError, match=r"no test window: no forecast origin at local midnight"):
        build(half)
    assert len(build(half, eval_origins="24").test) == 6


def test_a_validation_split_shorter_than_the_horizon_is_too_little_data(tiny_series):
    with pytest.raises(DataError, match=r"too little data .* val 12, test 144"):
        build(tiny_series, val="2021-02-06 12:00", test="2021-02-07")
