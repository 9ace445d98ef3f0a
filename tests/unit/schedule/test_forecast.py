"""Carbon forecasters: exact values on tiny series, no peeking, measured error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from greentune.errors import ScheduleError
from greentune.schedule.forecast import FORECASTERS, forecast_error, make_forecaster

TIMES = pd.date_range("2024-01-01", periods=24 * 30, freq="1h", tz="UTC")
DAILY = 200 + 100 * np.sin(2 * np.pi * np.arange(len(TIMES)) / 24)


def test_seasonal_naive_repeats_yesterday_and_never_reads_the_future():
    values = np.arange(24 * 3, dtype=float)
    f = make_forecaster("seasonal-naive")
    f.fit(values[:48], TIMES[:48], 24)
    leaked = values.copy()
    leaked[48:] = np.nan  # the future is unknown: a forecaster that reads it returns NaN
    out = f.predict(leaked, TIMES[:72], 48, 30)
    assert out.tolist() == [*range(24, 48), *range(24, 30)]


def test_weekly_naive_needs_a_week_of_history():
    f = make_forecaster("weekly-naive")
    f.fit(DAILY[:24], TIMES[:24], 24)
    with pytest.raises(ScheduleError, match="needs more history"):
        f.predict(DAILY, TIMES, 24, 24)


def test_noisy_forecast_has_the_asked_error_and_is_fixed_per_seed():
    values = np.full(20_000, 300.0)
    times = pd.date_range("2024-01-01", periods=len(values), freq="30min", tz="UTC")
    f = make_forecaster("noisy:0.05,7")
    out = f.predict(values, times, 0, len(values))
    assert np.std(out - values) == pytest.approx(0.05 * 300, rel=0.03)
    # the same slot gets the same forecast whenever it is asked
    assert f.predict(values, times, 100, 5).tolist() == out[100:105].tolist()
    other = make_forecaster("noisy:0.05,8").predict(values, times, 0, 10)
    assert other.tolist() != out[:10].tolist()


def test_perfect_refuses_a_window_the_trace_does_not_cover():
    f = make_forecaster("perfect")
    assert f.predict(DAILY, TIMES, 10, 3).tolist() == DAILY[10:13].tolist()
    with pytest.raises(ScheduleError, match="does not cover the planning window"):
        f.predict(DAILY, TIMES, len(DAILY) - 2, 5)


def test_lightgbm_learns_a_daily_cycle_better_than_a_constant():
    f = make_forecaster("lightgbm")
    f.fit(DAILY[: 24 * 25], TIMES[: 24 * 25], 24)
    future = DAILY.copy()
    future[24 * 25 :] = np.nan
    out = f.predict(future, TIMES, 24 * 25, 48)
    err = forecast_error(DAILY[24 * 25 : 24 * 27], out)
    assert err.mape_pct < 5.0 and err.slots == 48


def test_forecast_error_exact_and_unknown_names():
    err = forecast_error(np.array([100.0, 200.0]), np.array([110.0, 180.0]))
    assert (err.mape_pct, err.mae_g_per_kwh, err.bias_g_per_kwh) == (10.0, 15.0, -5.0)
    with pytest.raises(ScheduleError, match="unknown carbon forecaster 'prophet'; valid: "):
        make_forecaster("prophet")
    assert set(FORECASTERS) >= {"perfect", "noisy", "seasonal-naive", "weekly-naive", "lightgbm"}
