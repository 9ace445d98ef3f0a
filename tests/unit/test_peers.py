"""The peer baselines (neuralforecast, statsforecast, mlforecast) on greentune's windows: exact
continuations of periodic series, no reading of test targets, one fit per run, and a clear
refusal where the library is missing."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pandas as pd
import pytest

from greentune.config import RunConfig, replace
from greentune.data.windows import ForecastData
from greentune.errors import ConfigError
from greentune.evaluate.baselines import BASELINES, BaselineOptions, run_baseline
from greentune.evaluate.peers import PEERS, check_peers
from tests.unit.test_baselines import N_ROWS, QUANTILES, _data, _truth
from tests.unit.test_baselines import noisy as noisy  # the same noisy series, as a fixture

pytest.importorskip("neuralforecast")
pytest.importorskip("statsforecast")
pytest.importorskip("mlforecast")

FAST = BaselineOptions(seed=0, peer_max_steps=30)
BRIEF = BaselineOptions(seed=0, peer_max_steps=5)
"""Where only what a fit may read matters, not how well it learns."""


@pytest.fixture(scope="module")
def periodic() -> ForecastData:
    """Daily profile times a weekday/weekend level: exactly periodic with a week's period."""
    rng = np.random.default_rng(5)
    t = np.arange(N_ROWS)
    profile = rng.uniform(80.0, 120.0, 24)
    weekend = ((t // 24) % 7 >= 5).astype(float)
    y = profile[t % 24] * (1.0 - 0.2 * weekend)
    return _data({"y": y, "temp": rng.normal(15.0, 5.0, N_ROWS)})


def _mape(data: ForecastData, origins: np.ndarray, point: np.ndarray) -> float:
    truth = _truth(data, origins)
    return float(np.mean(np.abs(point - truth) / np.abs(truth)) * 100)


def test_every_peer_is_registered_beside_the_baselines() -> None:
    assert set(PEERS) <= set(BASELINES.names())
    assert set(PEERS) == {"nhits", "patchtst", "mstl", "mlforecast"}


def test_a_missing_library_is_refused_with_the_extra_to_install(monkeypatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args, **kwargs):
        return None if name == "neuralforecast" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    check_peers(["linear", "mstl"])  # installed, or not a peer: nothing to say
    with pytest.raises(ConfigError, match=r"nhits needs neuralforecast.*greentune\[peers\]"):
        check_peers(["linear", "nhits"])


def test_the_recipe_refuses_a_missing_peer_before_training(monkeypatch) -> None:
    from greentune.train.recipes.forecast import check_before_training

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    cfg = replace(RunConfig(), eval={"baselines": ("linear", "mlforecast")})
    with pytest.raises(ConfigError, match=r"mlforecast needs mlforecast.*remove mlforecast"):
        check_before_training(cfg, _periodic_data(), 24)


def _periodic_data() -> ForecastData:
    t = np.arange(N_ROWS)
    return _data({"y": 100.0 + 10.0 * np.sin(t), "temp": np.ones(N_ROWS)})


@pytest.mark.parametrize("name", ["mstl", "mlforecast"])
def test_a_weekly_periodic_series_is_continued(periodic: ForecastData, name: str) -> None:
    origins = periodic.test.origins
    fc = run_baseline(name, periodic, origins, (), FAST)
    assert fc.point.shape == (len(origins), 24, 1)
    # MSTL decomposes the two seasons exactly; the trees read last week's value at that time
    assert _mape(periodic, origins, fc.point) < (0.5 if name == "mstl" else 2.0)


# not MSTL: it refits at every origin, and with 14 validation days (fewer than 20 at the test
# origins' clock time) its quantiles would be calibrated on every validation hour: 300 fits
# NHITS here is slow (30 s); test_nhits_reads_the_known_covariates trains it in CI
@pytest.mark.parametrize(
    "name", ["mlforecast", pytest.param("nhits", marks=pytest.mark.slow), "patchtst"]
)
def test_peers_forecast_with_ordered_quantiles(noisy: ForecastData, name: str) -> None:
    origins = noisy.test.origins
    fc = run_baseline(name, noisy, origins, QUANTILES, FAST)
    assert fc.point.shape == (len(origins), 24, 1) and np.isfinite(fc.point).all()
    assert fc.quantiles is not None and sorted(fc.quantiles) == list(QUANTILES)
    lo, mid, hi = (fc.quantiles[q] for q in QUANTILES)
    assert (lo <= mid).all() and (mid <= hi).all() and lo.mean() < hi.mean()
    assert fc.fit_s > 0.0 and fc.predict_s > 0.0
    # a sanity bound, not a ranking: 30 training steps (PatchTST scores 10.7 %) on a level of
    # ~104 with daily, weekly and temperature swings of ~10-20
    assert _mape(noisy, origins, fc.point) < 15.0
    # validation forecasts (what the ensembles read) come from the same fit, not a new one
    again = run_baseline(name, noisy, noisy.val.origins, QUANTILES, FAST)
    assert again.fit_s < fc.fit_s


@pytest.mark.parametrize("name", ["mlforecast", "nhits"])
def test_fitting_never_reads_test_targets(noisy: ForecastData, name: str) -> None:
    frame = noisy.frame.copy()
    frame.iloc[noisy.test_start :, 0] = 1e6
    corrupt = dataclasses.replace(noisy, frame=frame, cache={})
    clean = dataclasses.replace(noisy, cache={})
    val = noisy.val.origins[-5:]
    np.testing.assert_allclose(
        run_baseline(name, corrupt, val, (), BRIEF).point,
        run_baseline(name, clean, val, (), BRIEF).point,
        rtol=1e-6,
    )
    # the corruption is real: forecasts from test origins see it in their history
    test = noisy.test.origins[1:3]
    assert not np.allclose(
        run_baseline(name, corrupt, test, (), BRIEF).point,
        run_baseline(name, clean, test, (), BRIEF).point,
    )


def test_mlforecast_keeps_the_tree_size_validation_prefers(
    noisy: ForecastData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given greentune's lightgbm sizes, it keeps the one whose recursive forecasts of the
    validation origins are closer; a size that cannot split (a constant) never wins."""
    import greentune.evaluate.lgbm as lgbm

    stump = {"num_leaves": 2, "min_child_samples": 10**6}
    origins = noisy.test.origins[:4]

    def forecast(sizes: tuple[dict[str, object], ...]) -> np.ndarray:
        monkeypatch.setattr(lgbm, "SIZES", sizes)
        fresh = dataclasses.replace(noisy, cache={})
        return run_baseline("mlforecast", fresh, origins, (), FAST).point

    trees, constant = forecast(({},)), forecast((stump,))
    assert np.ptp(constant) < 1e-6 < np.ptp(trees)  # the stump forecasts one value
    np.testing.assert_array_equal(forecast((stump, {})), trees)
    np.testing.assert_array_equal(forecast(({}, stump)), trees)


def test_nhits_reads_the_known_covariates() -> None:
    """Demand is temperature alone, temperature random: only a model that reads the
    temperature at the target times can forecast it."""
    rng = np.random.default_rng(6)
    temp = rng.normal(15.0, 5.0, N_ROWS)
    data = _data({"y": 100.0 + 3.0 * temp, "temp": temp})
    origins = data.test.origins
    options = BaselineOptions(seed=0, peer_max_steps=50)
    nhits = _mape(data, origins, run_baseline("nhits", data, origins, (), options).point)
    patchtst = _mape(data, origins, run_baseline("patchtst", data, origins, (), options).point)
    assert nhits < 0.5 * patchtst  # history only: PatchTST cannot know tomorrow's weather


def test_gaps_in_the_inputs_are_carried_forward_never_filled_from_later(
    noisy: ForecastData,
) -> None:
    from greentune.evaluate.peers import _filled

    frame = noisy.frame.copy()
    start = noisy.test_start
    frame.iloc[start - 30 : start, 0] = np.nan  # a gap that ends at the first test origin
    gappy = dataclasses.replace(noisy, frame=frame, cache={})
    filled = _filled(gappy).iloc[:, 0].to_numpy()
    # the gap holds the last value before it, not a blend with the origin's own target
    assert (filled[start - 30 : start] == noisy.frame.iloc[start - 31, 0]).all()
    fc = run_baseline("mlforecast", gappy, noisy.test.origins[:3], (), FAST)
    assert np.isfinite(fc.point).all()
    assert pd.isna(gappy.frame.iloc[start - 25, 0])  # the data itself is untouched
