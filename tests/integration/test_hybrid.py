"""The hybrid (``model.skip_init: lightgbm``): the network starts exactly at LightGBM's forecast
plus its quantile offsets, learns from out-of-fold bases, and a saved run forecasts new data with
the same base."""

from pathlib import Path

import numpy as np
import pytest
import torch

import greentune as gt
from greentune.config import replace
from greentune.data.windows import prepare_forecast_data
from greentune.errors import CheckpointError, ConfigError, ModelError
from greentune.evaluate.lgbm import predict_target, train_origins
from greentune.rundir import RunDir
from greentune.tasks.forecast.batches import make_batches
from greentune.tasks.forecast.hybrid import BASE_DIR, HybridBase, fit_hybrid_base
from greentune.tasks.forecast.model import build_model
from greentune.tasks.forecast.predict import predict_scaled
from tests.conftest import make_series, series_overrides


def _cfg(tmp: Path, *extra: str) -> gt.RunConfig:
    csv = tmp / "load.csv"
    if not csv.exists():
        make_series().to_csv(csv, index=False)
    return gt.build_config(
        overrides=[
            *series_overrides(csv, tmp / "runs", "hy"),
            "model.skip_init=lightgbm",
            "train.epochs=1",
            "eval.baselines=[lightgbm]",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, list[str]]:
    tmp = tmp_path_factory.mktemp("hybrid")
    lines: list[str] = []
    return gt.run(_cfg(tmp), echo=lines.append), lines


def test_the_network_starts_at_lightgbm_plus_its_quantile_offsets(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    data = prepare_forecast_data(cfg.data)
    base = fit_hybrid_base(data, cfg.model.quantiles, lambda m: None)
    model, _ = build_model(cfg, data, 10, None, base)
    assert model.skip is None and model.base_bias is not None
    val = data.val.origins
    out = predict_scaled(model, make_batches(cfg, data, val, None, base.scaled(data, val)), 64)
    lgbm = np.stack([predict_target(data, 0, base.fits[0], val)], axis=-1)  # data units
    scaled = (lgbm - data.scaler.mean[0]) / data.scaler.std[0]
    for i in range(len(cfg.model.quantiles)):  # head at zero: base + that quantile's offset
        expected = scaled[..., 0] + base.offsets[i].reshape(data.horizon)
        np.testing.assert_allclose(out[:, :, 0, i], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ModelError, match="base forecast .* carries none"):
        model(make_batches(cfg, data, val[:2], None).get(np.arange(2)))


def test_training_bases_are_out_of_fold(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    data = prepare_forecast_data(cfg.data)
    base = fit_hybrid_base(data, (), lambda m: None)
    origins = train_origins(data)
    y = data.target_values()[origins[:, None] + np.arange(data.horizon), 0]
    y = (y - data.scaler.mean[0]) / data.scaler.std[0]
    in_sample = base.scaled(data, origins)[..., 0]
    oof = base.scaled(data, origins, training=True)[..., 0]
    assert not np.allclose(in_sample, oof)
    # LightGBM flatters itself on its own training windows; refitted without them it does not
    assert np.mean(np.abs(oof - y)) > 1.2 * np.mean(np.abs(in_sample - y))


def test_a_hybrid_run_saves_its_base_and_forecasts_again_with_it(hybrid_run) -> None:
    run, lines = hybrid_run
    assert any("skip path: LightGBM base" in line for line in lines)
    assert (run.model_dir / BASE_DIR / "target-0.txt").is_file()
    m = run.metrics
    assert m.training.best_epoch is not None
    # the lightgbm row reuses the fit the hybrid started from: billed for it, not twice
    assert "train/lightgbm-base" in m.test["lightgbm"].energy_windows["fit"]
    predictor = gt.Predictor.from_run(run)
    assert isinstance(predictor.hybrid, HybridBase)
    data = prepare_forecast_data(run.config.data)
    fc = predictor.forecast(data, data.test.origins)
    saved = run.predictions
    saved = saved[saved.model == m.model]
    np.testing.assert_allclose(fc.point.reshape(-1), saved.y_pred.to_numpy(), rtol=1e-4, atol=1e-3)
    # new data through predict(): the base is computed for those windows too
    frame = make_series(days=12, seed=3)
    out = predictor.predict(frame.iloc[:-24], origins="daily")
    assert len(out) and out["load_mw_forecast"].notna().all()


def test_what_cannot_take_a_hybrid_says_why(hybrid_run, tmp_path: Path) -> None:
    run, _ = hybrid_run
    from greentune.privacy.federated.partitions import check_model
    from greentune.tasks import TASKS

    with pytest.raises(ConfigError, match="compress does not export"):
        TASKS.get("forecast").load_for_compression(run)
    with pytest.raises(ConfigError, match="cannot be federated"):
        check_model(run.config)
    ci = _cfg(
        tmp_path,
        "data.multivariate=true",
        "data.temperature_col=null",
        "data.channel_independent=true",
        "name=ci",
    )
    with pytest.raises(ConfigError, match="needs data.channel_independent=false"):
        gt.run(ci, echo=lambda m: None)
    private = TASKS.get("forecast").private_config(replace(run.config, privacy={}))
    assert private.model.skip_init == "seasonal"  # LightGBM is fitted on the raw rows
    with pytest.raises(ConfigError, match="needs model.linear_skip=true"):
        _cfg(tmp_path, "model.linear_skip=false")


def test_a_hybrid_without_its_saved_base_says_so(hybrid_run, tmp_path: Path) -> None:
    import shutil

    run, _ = hybrid_run
    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy)
    shutil.rmtree(copy / "model" / BASE_DIR)
    with pytest.raises(CheckpointError, match="LightGBM base .* is missing"):
        gt.Predictor.from_run(copy)
    shutil.copytree(run.model_dir / BASE_DIR, copy / "model" / BASE_DIR)
    (copy / "model" / BASE_DIR / "base.json").write_text("{}")
    with pytest.raises(CheckpointError, match="is damaged"):
        gt.Predictor.from_run(copy)


def test_the_bias_starts_at_the_offsets_in_output_order(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    data = prepare_forecast_data(cfg.data)
    base = fit_hybrid_base(data, cfg.model.quantiles, lambda m: None)
    model, _ = build_model(cfg, data, 10, None, base)
    bias = model.base_bias.detach().view(data.horizon, 1, len(cfg.model.quantiles))
    assert torch.allclose(bias[:, 0, 1].double(), torch.from_numpy(base.offsets[1]), atol=1e-6)
    assert model.base_bias.requires_grad
    # the median starts at LightGBM's own point; the band around it from out-of-fold residuals
    np.testing.assert_array_equal(base.offsets[1], 0.0)
    assert (base.offsets[0] <= 0).all() and (base.offsets[2] >= 0).all()
    assert (base.offsets[2] - base.offsets[0]).mean() > 0
