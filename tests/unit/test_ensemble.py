import numpy as np
import pytest

from greentune.config import build_config
from greentune.errors import ConfigError
from greentune.evaluate.ensemble import combine, fit_weights, member_windows, select_weights
from greentune.results import Forecast
from greentune.tasks.forecast.ensemble import ensemble_members


def _fc(point, lo=-1.0, hi=1.0):
    point = np.asarray(point, dtype=float).reshape(-1, 2, 1)  # (N, H=2, T=1)
    return Forecast(point, {0.1: point + lo, 0.5: point, 0.9: point + hi})


def test_weights_per_step_recover_a_convex_mix_fitted_on_validation():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 2, 1)), rng.normal(size=(50, 2, 1))
    y = np.empty_like(a)
    y[:, 0] = 0.25 * a[:, 0] + 0.75 * b[:, 0]  # step 0 mixes both
    y[:, 1] = b[:, 1]  # step 1 is b alone
    w = fit_weights({"a": Forecast(a), "b": Forecast(b)}, y)
    np.testing.assert_allclose(w, [[0.25, 0.75], [0.0, 1.0]], atol=1e-9)


def test_a_step_without_a_positive_weight_falls_back_to_equal_weights():
    a = np.ones((10, 1, 1))
    w = fit_weights({"a": Forecast(a), "b": Forecast(2 * a)}, -a)  # nothing positive fits
    np.testing.assert_allclose(w, [[0.5, 0.5]])


def test_mean_median_and_weighted_combine_points_and_quantiles():
    members = {"a": _fc([1, 2]), "b": _fc([3, 6], hi=3.0), "c": _fc([8, 10])}
    mean = combine("mean", members)
    assert mean.point.ravel().tolist() == [4.0, 6.0]
    assert mean.quantiles[0.9].ravel().tolist() == pytest.approx([4 + 5 / 3, 6 + 5 / 3])
    median = combine("median", members)
    assert median.point.ravel().tolist() == [3.0, 6.0]
    assert median.quantiles[0.9].ravel().tolist() == [6.0, 9.0]
    w = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])  # step 0: a alone; step 1: b and c
    weighted = combine("weighted", members, w)
    assert weighted.point.ravel().tolist() == [1.0, 8.0]
    assert weighted.quantiles[0.1].ravel().tolist() == [0.0, 7.0]
    levels = np.stack([weighted.quantiles[q] for q in (0.1, 0.5, 0.9)])
    assert (np.diff(levels, axis=0) >= 0).all()
    with pytest.raises(ConfigError, match="valid choices: mean, median, weighted"):
        combine("max", members)


def test_ensemble_selection_picks_with_replacement_and_keeps_the_best_prefix():
    # squared distance of the mean to 0.4: picks a (0.16), b (mean 0.5), a, b, a (mean 2/5,
    # loss 0); later rounds only tie that, so the earliest best prefix, 3 a + 2 b, is kept,
    # and the far-off member c is never picked
    val = [np.array(0.0), np.array(1.0), np.array(10.0)]
    w = select_weights(val, lambda x: float((x - 0.4) ** 2))
    np.testing.assert_array_equal(w, [0.6, 0.4, 0.0])
    # one round: the best single member alone; ties go to the first member
    np.testing.assert_array_equal(select_weights(val, lambda x: abs(float(x)), 1), [1, 0, 0])
    same = [np.array(1.0), np.array(1.0)]
    np.testing.assert_array_equal(select_weights(same, lambda x: float(x)), [1.0, 0.0])
    with pytest.raises(ValueError, match="at least one round"):
        select_weights(val, lambda x: 0.0, 0)


def test_a_member_without_quantiles_leaves_the_ensemble_without():
    members = {"a": _fc([1, 2]), "b": Forecast(np.zeros((1, 2, 1)))}
    assert combine("mean", members).quantiles is None


def test_energy_bills_each_members_window_once_and_the_ensembles_own():
    network = {"fit": {"train": 1.0}, "predict": {"test": 1.0}}
    linear = {
        "fit": {"baseline/linear": 0.9, "train/ridge-skip": 1.0},
        "predict": {"baseline/linear": 0.1},
    }
    lgbm = {"fit": {"baseline/lightgbm": 0.8}, "predict": {"baseline/lightgbm": 0.2}}
    got = member_windows([network, linear, lgbm], "ensemble")
    assert got == {
        "fit": {"ensemble": 1.0, "train": 1.0, "baseline/linear": 0.9, "baseline/lightgbm": 0.8},
        "predict": {"test": 1.0, "baseline/linear": 0.1, "baseline/lightgbm": 0.2},
    }


def test_members_default_to_what_runs_and_bad_ones_are_named():
    cfg = build_config(overrides=["eval.baselines=[linear,random_init]"])
    assert ensemble_members(cfg) == ["model", "linear"]
    bad = build_config(
        overrides=[
            "eval.ensemble_members=[model,random_init,lightgbm]",
            "eval.baselines=[linear,random_init]",
        ]
    )
    with pytest.raises(ConfigError, match="random_init, lightgbm cannot join"):
        ensemble_members(bad)


def test_members_that_rank_by_different_scores_are_refused():
    from types import SimpleNamespace

    from greentune.config import load_config
    from greentune.errors import ConfigError
    from greentune.tasks.forecast.predict import quality_for
    from greentune.tasks.members import check_members

    def member(path: str, metric: str | None) -> SimpleNamespace:
        chosen = [f"eval.metric={metric}"] if metric else []
        run = SimpleNamespace(path=path, config=load_config(None, chosen))
        return SimpleNamespace(run=run, name=f"{path}/model")

    same = [member("runs/a", "mase"), member("runs/b", "mase")]
    check_members(same, ("mean",), ("mean", "weighted"), quality_for)  # type: ignore[arg-type]
    unset = [member("runs/a", None), member("runs/b", "mape")]  # unset is the task's MAPE
    check_members(unset, ("mean",), ("mean", "weighted"), quality_for)  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError,
        match=r"rank by different scores \(eval.metric\): runs/a by mase, runs/b by mape",
    ):
        mixed = [member("runs/a", "mase"), member("runs/b", "mape")]
        check_members(mixed, ("mean",), ("mean", "weighted"), quality_for)  # type: ignore[arg-type]
