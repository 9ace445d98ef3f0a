"""Refitting a row on training + validation windows once validation has chosen its settings
(the ridge's design and penalty, LightGBM's design, tree size and rounds)."""

from pathlib import Path

import numpy as np
import pandas as pd

from greentune.config import build_config
from greentune.data.sources import RawTable
from greentune.data.validate import clean_frame
from greentune.data.windows import ForecastData, build_forecast_data
from greentune.evaluate.baselines import horizon_positions, ridge_point
from greentune.evaluate.lgbm import kept_fit, predict_target, refit_design
from greentune.evaluate.ridge import fit_linear, refit_linear, ridge_origins
from tests.conftest import make_series, series_overrides


def _data(frame: pd.DataFrame) -> ForecastData:
    cfg = build_config(overrides=series_overrides(Path("s.csv"), Path("unused")))
    clean, report = clean_frame(RawTable(frame, "s.csv"), cfg.data)
    return build_forecast_data(clean, cfg.data, report)


def _shifted() -> ForecastData:
    """From day 27 on, 60 MW more every afternoon (a new shift at a plant, say): validation
    (from day 28) and test have a daily shape that only validation shows a refit."""
    frame = make_series(days=40)
    hour = pd.to_datetime(frame["ts"]).dt.hour.to_numpy()
    frame["load_mw"] += 60.0 * ((hour >= 12) & (hour < 18)) * (np.arange(len(frame)) >= 27 * 24)
    return _data(frame)


def _test_mae(data: ForecastData, point: np.ndarray) -> float:
    o = data.test.origins
    return float(np.mean(np.abs(point - data.target_values()[horizon_positions(o, data.horizon)])))


def test_a_refit_on_the_training_windows_is_the_fit_itself() -> None:
    data = _data(make_series(days=40))
    fit = fit_linear(data)
    again = refit_linear(data, fit, ridge_origins(data)[0])
    assert (again.alpha, again.level) == (fit.alpha, fit.level)
    np.testing.assert_allclose(again.weight, fit.weight, rtol=1e-7, atol=1e-9)


def test_a_refit_on_training_and_validation_learns_the_level_validation_held() -> None:
    data = _shifted()
    fit = fit_linear(data)
    L, H = data.context_length, data.horizon
    refit = refit_linear(data, fit, np.arange(L, data.test_start - H + 1))
    assert (refit.alpha, refit.level) == (fit.alpha, fit.level)
    test = data.test.origins
    before = _test_mae(data, ridge_point(data, fit, test))
    after = _test_mae(data, ridge_point(data, refit, test))
    assert after < 0.8 * before


def test_lightgbm_refits_its_design_with_the_rounds_validation_chose() -> None:
    data = _shifted()
    fit = kept_fit(data, 0)
    refit = refit_design(data, 0, fit)
    assert (refit.form, refit.size) == (fit.form, fit.size)
    assert refit.predict.booster.current_iteration() == fit.predict.iterations
    test = data.test.origins
    before = _test_mae(data, predict_target(data, 0, fit, test)[..., None])
    after = _test_mae(data, predict_target(data, 0, refit, test)[..., None])
    assert after < before
    # deterministic: the same refit twice
    np.testing.assert_array_equal(
        predict_target(data, 0, refit_design(data, 0, fit), test),
        predict_target(data, 0, refit, test),
    )


def test_lightgbm_reads_a_week_or_its_whole_day_lags_before_the_origin() -> None:
    from greentune.evaluate.lgbm import LgbmFit, history_rows

    def fit(form: str) -> LgbmFit:
        return LgbmFit(form, {}, None, 0.0)  # type: ignore[arg-type]

    assert history_rows(fit("level"), 24, 48) == 168
    assert history_rows(fit("timestamp"), 24, 24) == 168  # lags 1..7 days
    assert history_rows(fit("timestamp"), 24, 48) == 192  # lags 2..8 days
    assert history_rows(fit("timestamp"), 48, 48) == 336
