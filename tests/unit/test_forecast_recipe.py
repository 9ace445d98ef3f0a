from pathlib import Path

import numpy as np
import pytest

from greentune.config import build_config
from greentune.data.sources import RawTable
from greentune.data.validate import clean_frame
from greentune.data.windows import build_forecast_data
from greentune.evaluate.ridge import design_matrix, fit_linear
from greentune.tasks.forecast.batches import make_batches
from greentune.tasks.forecast.model import build_model
from greentune.tasks.forecast.predict import predict_scaled, to_forecast
from greentune.tasks.forecast.skip import SkipInit
from tests.conftest import make_series, series_overrides


@pytest.fixture(scope="module")
def setup():
    # the table is passed in directly; the path and output folder are never touched
    cfg = build_config(overrides=series_overrides(Path("s.csv"), Path("unused")))
    frame, report = clean_frame(RawTable(make_series(), "s.csv"), cfg.data)
    return cfg, build_forecast_data(frame, cfg.data, report)


def test_ridge_initialised_network_starts_at_the_linear_forecast(setup):
    cfg, data = setup
    fit = fit_linear(data)
    offsets = fit.residual_quantiles(data, data.train.origins, (0.1, 0.5, 0.9))
    assert (
        offsets.shape == (3, 24)
        and (offsets[0] < offsets[1]).all()
        and (offsets[1] < offsets[2]).all()
    )
    model, _ = build_model(cfg, data, total_steps=10, skip=SkipInit(fit, offsets))
    assert not model.skip.weight.requires_grad and model.skip.bias.requires_grad
    out = predict_scaled(model, make_batches(cfg, data, data.test.origins, None), 64)
    x, _ = design_matrix(data, data.test.origins)
    ridge = fit.predict_scaled(x).reshape(len(x), 24, 1)
    for q in range(3):  # the head is zero: each quantile starts at ridge + its residual quantile
        np.testing.assert_allclose(out[..., q], ridge + offsets[q][None, :, None], atol=2e-4)


def test_to_forecast_unscales_and_names_quantiles(setup):
    _, data = setup
    out = np.zeros((2, 24, 1, 3), dtype=np.float32)
    out[..., 0], out[..., 2] = -1.0, 1.0
    fc = to_forecast(data, out, (0.1, 0.5, 0.9))
    mean, std = data.scaler.mean[0], data.scaler.std[0]
    assert fc.point[0, 0, 0] == pytest.approx(mean)
    assert fc.quantiles[0.9][1, 5, 0] == pytest.approx(mean + std)
    assert fc.quantiles[0.1][1, 5, 0] == pytest.approx(mean - std)


def test_ridge_fit_is_shared_by_the_skip_path_and_the_linear_baseline(setup):
    from greentune.evaluate.baselines import run_baseline

    _, data = setup
    data.cache.clear()
    first = fit_linear(data)
    assert fit_linear(data) is first and first.fit_s > 0
    fc = run_baseline("linear", data, data.test.origins, ())
    assert fc.fit_s >= first.fit_s  # the shared fit's seconds are still billed to the baseline


@pytest.fixture(scope="module")
def channel_independent():
    overrides = [
        *series_overrides(Path("s.csv"), Path("unused")),
        "data.multivariate=true",
        "data.temperature_col=null",
        "data.channel_independent=true",
    ]
    cfg = build_config(overrides=overrides)
    frame, report = clean_frame(RawTable(make_series(), "s.csv"), cfg.data)
    return cfg, build_forecast_data(frame, cfg.data, report)


def test_channel_independent_ridge_is_one_univariate_model_shared_by_targets(channel_independent):
    _, data = channel_independent
    assert data.target_cols == ["load_mw", "temp_c"] and data.channel_independent
    fit = fit_linear(data)
    k = len(data.known_cols)
    # own history + the known covariates' history, then the known future -> one target's horizon
    assert fit.weight.shape == (48 * (1 + k) + 24 * k, 24)
    x, y = design_matrix(data, data.test.origins[:3])
    assert x.shape[0] == 6 and y.shape == (6, 24)
    # row 2*b + t is target t of window b: its own history comes first in every context step
    scaled_load = data.scaled[data.test.origins[1] - 48 : data.test.origins[1], 0]
    np.testing.assert_allclose(x[2, :: 1 + k][:48], scaled_load)


def test_channel_independent_network_starts_at_the_shared_ridge(channel_independent):
    from greentune.data.windows import unfold_targets

    cfg, data = channel_independent
    fit = fit_linear(data)
    offsets = fit.residual_quantiles(data, data.train.origins, (0.1, 0.5, 0.9))
    model, _ = build_model(cfg, data, total_steps=10, skip=SkipInit(fit, offsets))
    out = predict_scaled(model, make_batches(cfg, data, data.test.origins, None), 64)
    assert out.shape == (len(data.test.origins), 24, 2, 3)
    x, _ = design_matrix(data, data.test.origins)
    ridge = unfold_targets(fit.predict_scaled(x), 2)  # (N, 24, 2)
    for q in range(3):
        np.testing.assert_allclose(out[..., q], ridge + offsets[q][None, :, None], atol=2e-4)


def test_channel_independent_linear_baseline_forecasts_every_target(channel_independent):
    from greentune.evaluate.baselines import run_baseline

    _, data = channel_independent
    fc = run_baseline("linear", data, data.test.origins, (0.1, 0.5, 0.9))
    assert fc.point.shape == (len(data.test.origins), 24, 2)
    truth = data.target_values()[data.test.origins[:, None] + np.arange(24)]
    # a shared daily-cycle model is close on both channels (scaled error well under 1 std)
    scaled_err = np.abs(fc.point - truth).mean(axis=(0, 1)) / data.scaler.std[:2]
    assert (scaled_err < 0.5).all()
