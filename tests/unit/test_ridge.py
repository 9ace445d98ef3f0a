"""The ridge solved from sums: the window-levelled design equals a ridge fitted by hand on
levelled windows, it is chosen on validation when the level moves, and its forecast moves with
the level."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from greentune.config import build_config
from greentune.data.sources import RawTable
from greentune.data.validate import clean_frame
from greentune.data.windows import ForecastData, build_forecast_data
from greentune.evaluate import ridge_rows
from greentune.evaluate.lagged import lagged_sums, runs
from greentune.evaluate.ridge import (
    LEVELS,
    RIDGE_ALPHAS,
    WALK_START,
    _centred,
    _LevelStep,
    _Solver,
    clock_minutes,
    complete_origins,
    design_matrix,
    fit_linear,
    fit_linear_at,
    level_layout,
    ridge_origins,
    ridge_statistics,
    solve_ridge,
    walk_alphas,
)
from tests.conftest import make_series, series_overrides


def _data(frame: pd.DataFrame, *extra: str) -> ForecastData:
    if "data.multivariate=true" in extra:  # temp_c is then a target: no hinges of it ahead
        extra = (*extra, "data.temperature_col=null")
    cfg = build_config(overrides=[*series_overrides(Path("s.csv"), Path("unused")), *extra])
    clean, report = clean_frame(RawTable(frame, "s.csv"), cfg.data)
    return build_forecast_data(clean, cfg.data, report)


def _shifted(seed: int = 0) -> pd.DataFrame:
    """The tiny series 80 MW higher from day 27 on (a new industrial customer, say): validation
    (from day 28) and test sit at a level no training target had."""
    frame = make_series(days=40, seed=seed)
    frame["load_mw"] += 80.0 * (np.arange(len(frame)) >= 27 * 24)
    return frame


def _levelled(data: ForecastData, origins: np.ndarray) -> tuple[np.ndarray, ...]:
    """Design rows with each target's context mean taken off its context and its targets."""
    level_x, level_y = level_layout(data)
    x, y = (a.astype(np.float64) for a in design_matrix(data, origins))
    added = np.zeros_like(y)
    for j in range(1, int(level_y.max()) + 1):
        mean = x[:, level_x == j].mean(1, keepdims=True)
        x[:, level_x == j] -= mean
        added[:, level_y == j] = mean
    return x, y - added, added


@pytest.mark.parametrize("extra", [(), ("data.multivariate=true",)])
def test_the_window_design_is_the_ridge_of_levelled_windows(extra: tuple[str, ...]) -> None:
    data = _data(_shifted(), *extra)
    fit = solve_ridge(ridge_statistics(data), levels=("window",))
    assert fit.level == "window"
    L, H = data.context_length, data.horizon
    train = complete_origins(data, np.arange(L, data.val_start - H + 1))
    x, y, _ = _levelled(data, train)
    xm, ym = x.mean(0), y.mean(0)
    gram = (x - xm).T @ (x - xm)
    # the penalty's scale is the raw design's, which both designs share
    raw_x = design_matrix(data, train)[0].astype(np.float64)
    raw_gram = (raw_x - raw_x.mean(0)).T @ (raw_x - raw_x.mean(0))
    ridge = gram + fit.alpha * np.mean(np.diag(raw_gram)) * np.eye(len(gram))
    w = np.linalg.solve(ridge, (x - xm).T @ (y - ym))
    test = data.test.origins
    xt, _, mean_t = _levelled(data, test)
    by_hand = (xt - xm) @ w + ym + mean_t
    raw_x, _ = design_matrix(data, test)
    np.testing.assert_allclose(fit.predict_scaled(raw_x), by_hand, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_new_level_chooses_the_window_design_and_the_forecast_follows_the_level(
    seed: int,
) -> None:
    data = _data(_shifted(seed))
    fit = fit_linear(data)
    assert fit.level == "window"
    raw = solve_ridge(ridge_statistics(data), levels=("raw",))
    x, y = design_matrix(data, data.test.origins)

    def mse(f: object) -> float:
        return float(np.mean((f.predict_scaled(x) - y) ** 2))  # type: ignore[attr-defined]

    assert mse(fit) < 0.2 * mse(raw)  # chosen on validation; on test the raw one misses by far
    own = level_layout(data)[0] == 1
    moved = x.copy()
    moved[:, own] += 3.0  # the whole context 3 (scaled) units higher
    np.testing.assert_allclose(fit.predict_scaled(moved), fit.predict_scaled(x) + 3.0, atol=1e-6)
    assert not np.allclose(raw.predict_scaled(moved), raw.predict_scaled(x) + 3.0, atol=1e-3)


def test_channel_independent_sums_count_one_row_per_target() -> None:
    data = _data(make_series(), "data.multivariate=true", "data.channel_independent=true")
    stats = ridge_statistics(data)
    L, H = data.context_length, data.horizon
    origins = complete_origins(data, np.arange(L, data.val_start - H + 1))
    x, _ = design_matrix(data, origins)
    assert stats["n"][0] == len(x) == 2 * len(origins)
    np.testing.assert_allclose(stats["sx"] / stats["n"][0], x.astype(np.float64).mean(0), atol=1e-9)


@pytest.mark.parametrize("level", ["raw", "window"])
def test_validation_errors_from_the_sums_are_the_errors_of_the_fits(level: str) -> None:
    """The alpha walk and the design choice read validation MSE from sums alone; it must be
    the MSE of each fit on the validation windows, for either design and any alpha."""
    data = _data(_shifted(), "data.multivariate=true")  # two targets: the level step per target
    stats = ridge_statistics(data)
    c = _centred(stats)
    step = _LevelStep.from_layout(stats["level_x"], stats["level_y"])
    cc = c if level == "raw" else step.apply(c)
    scale = float(np.mean(np.diag(cc.gram)))
    x, y = (a.astype(np.float64) for a in design_matrix(data, data.val.origins))
    for alpha in RIDGE_ALPHAS:
        w = np.linalg.solve(cc.gram + alpha * scale * np.eye(len(cc.gram)), cc.xty)
        from_sums = (np.sum(w * (cc.cxx @ w)) - 2 * np.sum(w * cc.cxy) + cc.cyy) / y.size
        raw_w = w if level == "raw" else step.to_raw(w)
        direct = np.mean(((x - c.xm) @ raw_w + c.ym - y) ** 2)
        assert from_sums == pytest.approx(direct, rel=1e-7)


@pytest.mark.parametrize("extra", [(), ("data.multivariate=true",)])
def test_few_windows_solve_through_their_rows_to_the_fit_of_their_sums(
    extra: tuple[str, ...],
) -> None:
    """One window a day (a ridge per clock time) gives fewer rows than inputs: the fit through
    the n x n kernel must be the fit of the sums' solver, alpha and design included, with
    each design alone and with both."""
    data = _data(_shifted(), *extra)
    L, H = data.context_length, data.horizon
    every = np.arange(L, data.val_start - H + 1)
    origins = (every[::24], data.val.origins)  # one a day, as fit_linear_at takes them
    stats = ridge_statistics(data, origins=origins)
    train, val = ridge_origins(data, origins)
    x, y = (a.astype(np.float64) for a in design_matrix(data, train))
    xv, yv = (a.astype(np.float64) for a in design_matrix(data, val))
    assert len(x) < 0.5 * x.shape[1]
    step = _LevelStep.from_layout(*level_layout(data))
    for levels in (("raw",), ("window",), ("raw", "window")):
        want = solve_ridge(stats, levels)
        got = ridge_rows.solve_rows(x, y, xv, yv, step, levels, RIDGE_ALPHAS, walk_alphas)
        assert (RIDGE_ALPHAS[got.alpha_index], got.level) == (want.alpha, want.level)
        np.testing.assert_allclose(got.weight, want.weight, atol=1e-7 * np.abs(want.weight).max())
        np.testing.assert_allclose(got.x_mean, want.x_mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got.y_mean, want.y_mean, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("extra", [(), ("data.multivariate=true", "data.channel_independent=true")])
@pytest.mark.parametrize("level", LEVELS)
def test_the_rows_solve_each_penalty_as_the_sums_do(extra: tuple[str, ...], level: str) -> None:
    """At every penalty of the grid, the smallest included (where X'X + a I is nearly
    singular with fewer rows than inputs), each design's weights and validation error from
    ``solve_rows`` (its own centring, penalty scale and validation rows) are the sums' ones;
    with channels folded into rows too. The validation level differs from training's by
    80 MW, so validation rows centred anywhere but at the training means would show."""
    data = _data(_shifted(), *extra)
    L, H = data.context_length, data.horizon
    origins = (np.arange(L, data.val_start - H + 1)[::24], data.val.origins)
    stats = ridge_statistics(data, origins=origins)
    train, val = ridge_origins(data, origins)
    x, y = (a.astype(np.float64) for a in design_matrix(data, train))
    xv, yv = (a.astype(np.float64) for a in design_matrix(data, val))
    raw = _centred(stats)
    step = _LevelStep.from_layout(stats["level_x"], stats["level_y"])
    solver = _Solver(raw.gram)
    c, solve = (raw, solver) if level == "raw" else (step.apply(raw), step.solver(raw.gram, solver))

    def at(i: int) -> ridge_rows.Walk:
        return lambda _error, _alphas: i

    for i in range(len(RIDGE_ALPHAS)):
        got = ridge_rows.solve_rows(x, y, xv, yv, step, (level,), RIDGE_ALPHAS, at(i))
        w = solve(i, c.xty)
        want = w if level == "raw" else step.to_raw(w)
        # the sums' levelled solve (a rank-2t update of the raw factor) and the kernel's
        # direct one round differently where X'X + a I is nearly singular
        np.testing.assert_allclose(got.weight, want, atol=1e-6 * np.abs(want).max())
        sse = np.sum(w * (c.cxx @ w)) - 2 * np.sum(w * c.cxy) + c.cyy
        assert got.val_mse == pytest.approx(sse / (c.nv * w.shape[1]), rel=1e-6)


@pytest.mark.parametrize("extra", [(), ("data.multivariate=true", "data.channel_independent=true")])
def test_a_ridge_per_clock_time_goes_through_its_rows_to_the_fit_of_its_sums(
    extra: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """fit_linear_at sees one window a day, fewer than its inputs: it takes the row path, on
    exactly the rows its sums hold (windows with a gap left out, channels folded into rows),
    and gives the fit of the sums' solver."""
    frame = make_series(days=40)
    frame.loc[[200, 201, 460], "load_mw"] = np.nan
    data = _data(frame, *extra)
    took: list[int] = []
    real = ridge_rows.solve_rows

    def counted(x: np.ndarray, *args: object) -> object:
        took.append(len(x))
        return real(x, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ridge_rows, "solve_rows", counted)
    got = fit_linear_at(data, 360)
    L, H = data.context_length, data.horizon
    train = np.arange(L, data.val_start - H + 1)
    val = np.arange(max(data.val_start, L), data.test_start - H + 1)
    train, val = (o[clock_minutes(data, o) == 360] for o in (train, val))
    assert len(complete_origins(data, train)) < len(train)  # the gap takes windows out
    stats = ridge_statistics(data, origins=(train, val))
    assert took == [stats["n"][0]]
    want = solve_ridge(stats)
    assert (got.alpha, got.level) == (want.alpha, want.level)
    np.testing.assert_allclose(got.weight, want.weight, atol=1e-7 * np.abs(want.weight).max())


def test_lagged_sums_are_the_sums_of_the_design_rows() -> None:
    rng = np.random.default_rng(3)
    series = rng.normal(size=(300, 3))
    total, gram = lagged_sums(series, 20, 250, before=9, after=5, chunk=64)
    z = np.stack([series[t - 9 : t + 5].reshape(-1) for t in range(20, 250)])
    np.testing.assert_allclose(gram, z.T @ z, rtol=1e-12, atol=1e-11)
    np.testing.assert_allclose(total, z.sum(0), rtol=1e-12, atol=1e-11)
    with pytest.raises(ValueError, match="origins 20..296 need rows outside the series of 300"):
        lagged_sums(series, 20, 297, before=9, after=5)
    assert runs(np.array([3, 4, 5, 9, 11, 12])) == [(3, 6), (9, 10), (11, 13)]
    assert runs(np.zeros(0, dtype=int)) == []


@pytest.mark.parametrize(
    "extra",
    [
        (),
        ("data.multivariate=true",),
        ("data.multivariate=true", "data.channel_independent=true"),
    ],
)
def test_sums_from_lagged_products_equal_the_sums_of_the_design_rows(
    extra: tuple[str, ...],
) -> None:
    """Every run of consecutive origins summed from lagged cross-products, or none: the same
    sums, with gaps that split the training origins into several runs."""
    frame = make_series(days=40)
    frame.loc[[200, 201, 460], "load_mw"] = np.nan
    data = _data(frame, *extra)
    L, H = data.context_length, data.horizon
    train = complete_origins(data, np.arange(L, data.val_start - H + 1))
    assert len(runs(train)) == 3
    lagged = ridge_statistics(data, chunk=100, lagged_from=1)
    direct = ridge_statistics(data, chunk=100, lagged_from=10**9)
    assert lagged.keys() == direct.keys()
    for key, value in direct.items():
        np.testing.assert_allclose(lagged[key], value, rtol=1e-10, atol=1e-9, err_msg=key)


@pytest.mark.parametrize(
    ("minimum", "visited"),
    [
        (1e-2, {1e-3, 1e-2, 1e-1}),  # a minimum at the start costs three fits
        (100.0, {1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0}),  # to the top edge, never below 1e-3
        (1e-6, {1e-6, 1e-5, 1e-4, 1e-3, 1e-2}),  # to the bottom edge, never above 1e-2
        (1.0, {1e-3, 1e-2, 1e-1, 1.0, 10.0}),
    ],
)
def test_the_walk_starts_at_its_start_and_fits_only_where_validation_improves(
    minimum: float, visited: set[float]
) -> None:
    seen: list[float] = []

    def val_error(i: int) -> float:
        seen.append(RIDGE_ALPHAS[i])
        return abs(np.log10(RIDGE_ALPHAS[i]) - np.log10(minimum))

    assert RIDGE_ALPHAS[walk_alphas(val_error)] == minimum
    assert set(seen) == visited
    assert WALK_START in seen
