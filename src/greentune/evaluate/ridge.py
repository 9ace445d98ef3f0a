"""The ridge behind the `linear` baseline and the network's skip path, from sufficient statistics.

One code path serves one process and a federation: ``ridge_statistics`` sums (float64) over the
training windows (stride 1, complete ones; runs of consecutive origins from lagged
cross-products, ``lagged``) and the validation windows; ``solve_ridge`` solves from the sums
alone. A federated server adds the clients' sums and calls the same solver, so
its start equals the centralised ridge on pooled windows.

Two designs are solved and the one with the lower validation MSE is kept (validation, never
test):

- ``raw``: the flattened scaled context and known future, as the network sees them;
- ``window``: each target's context mean removed from its own context and its targets, and
  added back to the forecast (RLinear / RevIN's level step, Li et al. 2023). The forecast
  then moves with the level of the window, which is what a series with level shifts between
  training and test (ETTh1's transformer temperatures, a grid with new load) needs.

Both are linear in the raw inputs, so the kept fit is stored as one ``LinearFit`` on raw inputs
and the network's skip path starts from it unchanged. The level step is applied to the sums
(low-rank algebra on X'X), not by a second pass over the data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import linalg

from greentune.data.windows import ForecastData, fold_channels
from greentune.errors import DataError
from greentune.evaluate import ridge_rows
from greentune.evaluate.lagged import lagged_sums, runs

# Ridge penalties relative to the mean diagonal of the raw design's X'X, so the grid means the
# same at any size; both designs use that one scale, so they share each alpha's factor.
# The walk starts at WALK_START and goes where validation improves. Short or noisy series
# want 10-100 (4 weeks of half-hours), long clean ones 1e-4 and less (3 years of hours).
RIDGE_ALPHAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
WALK_START = 1e-2
LEVELS = ("raw", "window")
# From this many consecutive origins on, sums from lagged cross-products beat the product of
# the design rows (their fixed cost is one pass over the block diagonals).
LAGGED_FROM = 256
LEVEL_WORDS = {"raw": "raw inputs", "window": "window level removed"}
Stats = dict[str, np.ndarray]
Solve = Callable[[int, np.ndarray], np.ndarray]
"""(alpha index, b) -> the ridge solution of b at that alpha."""
SUM_KEYS = ("n", "sx", "sy", "sxx", "sxy", "nv", "sxv", "syv", "sxxv", "sxyv", "syyv")
LAYOUT_KEYS = ("level_x", "level_y")
KEYS = (*SUM_KEYS, *LAYOUT_KEYS)


def complete_origins(data: ForecastData, origins: np.ndarray) -> np.ndarray:
    """Origins whose context and horizon hold no missing value (``scaled`` has them as zeros)."""
    bad = np.isnan(data.frame.to_numpy(dtype=float)).any(axis=1)
    if not bad.any():
        return origins
    cum = np.concatenate([[0], np.cumsum(bad)])
    return origins[cum[origins + data.horizon] - cum[origins - data.context_length] == 0]


def design_matrix(data: ForecastData, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flattened scaled context + known future (the network's inputs) and flattened scaled y;
    one row per window, or per (window, target) when the data is channel-independent."""
    b = data.batch(origins)
    past, future, y = b["past"], b["future"], b["y"]
    if data.channel_independent:
        past, future, y = fold_channels(past, future, y, data.n_targets)
    n = len(past)
    x = np.concatenate([past.reshape(n, -1), future.reshape(n, -1)], axis=1)
    return x, y.reshape(n, -1)


def level_layout(data: ForecastData) -> tuple[np.ndarray, np.ndarray]:
    """Which design columns are target j's context (j + 1; 0 for any other input) and which
    outputs are target j's forecast (j + 1): what the ``window`` design centres."""
    L, H = data.context_length, data.horizon
    t, channels = data.series_targets, data.series_channels
    per_step = np.arange(channels)
    past = np.tile(np.where(per_step < t, per_step + 1, 0), L)
    future = np.zeros(H * len(data.known_cols), dtype=np.int64)
    return np.concatenate([past, future]).astype(np.float64), np.tile(
        np.arange(1, t + 1), H
    ).astype(np.float64)


def ridge_origins(
    data: ForecastData, origins: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The complete (training, validation) origins of ``ridge_statistics``."""
    L, H = data.context_length, data.horizon
    matched = data.config is not None and data.config.match_origins
    every = data.train.origins if matched else np.arange(L, data.val_start - H + 1)
    train, val = origins if origins is not None else (every, data.val.origins)
    train, val = complete_origins(data, train), complete_origins(data, val)
    if len(train) == 0 or len(val) == 0:
        raise DataError(
            f"{data.report.origin}: no complete {'training' if len(train) == 0 else 'validation'}"
            " window for the ridge (a gap in every window): fill the gaps (data.fill_gaps) or "
            "use more data"
        )
    return train, val


def ridge_statistics(
    data: ForecastData,
    chunk: int = 2048,
    lagged_from: int = LAGGED_FROM,
    origins: tuple[np.ndarray, np.ndarray] | None = None,
) -> Stats:
    """Sums (float64) over the training windows (stride 1, complete ones; with
    ``data.match_origins`` the training windows, one a day) and the validation windows, with
    the layout the ``window`` design needs. Runs of at least ``lagged_from`` consecutive
    origins are summed from lagged cross-products (``lagged``), the other origins by products
    of their design rows in chunks of ``chunk``. ``origins``: (training, validation) origins
    of one's own instead (``fit_linear_at``)."""
    train, val = ridge_origins(data, origins)
    level_x, level_y = level_layout(data)
    return {
        **_sums(data, train, chunk, lagged_from, ""),
        **_sums(data, val, chunk, lagged_from, "v"),
        "level_x": level_x,
        "level_y": level_y,
    }


def _sums(
    data: ForecastData, origins: np.ndarray, chunk: int, lagged_from: int, suffix: str
) -> Stats:
    out: dict[str, np.ndarray] = {}
    rows = 0  # design rows: a channel-independent window gives one per target

    def add(parts: Stats, n: int) -> None:
        nonlocal rows
        rows += n
        for key, value in parts.items():
            if suffix or key != "syy":
                out[key + suffix] = out.get(key + suffix, 0) + value

    short = []
    for first, stop in runs(origins):
        if stop - first >= lagged_from:
            add(*_lagged_parts(data, first, stop))
        else:
            short.append(np.arange(first, stop))
    rest = np.concatenate(short) if short else np.zeros(0, dtype=np.int64)
    for i in range(0, len(rest), chunk):
        x, y = design_matrix(data, rest[i : i + chunk])
        x, y = x.astype(np.float64), y.astype(np.float64)
        add(
            {
                "sx": x.sum(0),
                "sy": y.sum(0),
                "sxx": x.T @ x,
                "sxy": x.T @ y,
                "syy": np.asarray([np.sum(y * y)]),
            },
            len(x),
        )
    out["n" + suffix] = np.asarray([float(rows)])
    return out


def _lagged_parts(data: ForecastData, first: int, stop: int) -> tuple[Stats, int]:
    """The sums of ``_sums`` over the consecutive origins ``first .. stop - 1``, each design
    column picked from the lagged sums of the series it reads (one per target when the data
    is channel-independent, as ``fold_channels`` lays them out)."""
    L, H, t = data.context_length, data.horizon, data.n_targets
    known = np.arange(data.known_slice.start, data.known_slice.stop)
    if data.channel_independent:
        series = [[j, *range(t, len(data.columns))] for j in range(t)]
        known, targets = known - t + 1, np.zeros(1, dtype=np.int64)
    else:
        series, targets = [list(range(len(data.columns)))], np.arange(t)
    width = len(series[0])
    ahead = (L + np.arange(H))[:, None] * width
    xi = np.concatenate([np.arange(L * width), (ahead + known).ravel()])
    yi = (ahead + targets).ravel()
    out: Stats = {}
    for columns in series:
        sz, gram = lagged_sums(data.scaled[:, columns], first, stop, L, H)
        parts = {
            "sx": sz[xi],
            "sy": sz[yi],
            "sxx": gram[np.ix_(xi, xi)],
            "sxy": gram[np.ix_(xi, yi)],
            "syy": np.asarray([np.trace(gram[np.ix_(yi, yi)])]),
        }
        for key, value in parts.items():
            out[key] = out.get(key, 0) + value
    return out, (stop - first) * len(series)


@dataclass
class LinearFit:
    """Ridge from the flattened scaled inputs (past, then future) to the flattened scaled y."""

    weight: np.ndarray
    """(L*C + H*K, H*T)"""
    x_mean: np.ndarray
    y_mean: np.ndarray
    alpha: float
    fit_s: float
    level: str = "raw"
    """The design chosen on validation (see the module's doc); the weights are on raw inputs
    either way."""

    def predict_scaled(self, x: np.ndarray) -> np.ndarray:
        return (x - self.x_mean) @ self.weight + self.y_mean

    def residual_quantiles(
        self, data: ForecastData, origins: np.ndarray, quantiles: tuple[float, ...]
    ) -> np.ndarray:
        """(Q, H*T) quantiles of scaled residuals y - yhat over ``origins``."""
        x, y = design_matrix(data, complete_origins(data, origins))
        return np.quantile(y - self.predict_scaled(x), quantiles, axis=0)


@dataclass
class _Centred:
    """Training means, centred X'X and X'Y, and the validation sums centred at the training
    means (cxx, cxy, cyy), which give any w's validation SSE without the data."""

    xm: np.ndarray
    ym: np.ndarray
    gram: np.ndarray
    xty: np.ndarray
    cxx: np.ndarray
    cxy: np.ndarray
    cyy: float
    nv: float


def _centred(stats: Stats) -> _Centred:
    n, nv = float(stats["n"][0]), float(stats["nv"][0])
    if n == 0 or nv == 0:
        raise DataError("no complete training or validation window for the ridge")
    xm, ym = stats["sx"] / n, stats["sy"] / n
    sxv, syv = stats["sxv"], stats["syv"]
    return _Centred(
        xm,
        ym,
        stats["sxx"] - n * np.outer(xm, xm),
        stats["sxy"] - n * np.outer(xm, ym),
        stats["sxxv"] - np.outer(sxv, xm) - np.outer(xm, sxv) + nv * np.outer(xm, xm),
        stats["sxyv"] - np.outer(sxv, ym) - np.outer(xm, syv) + nv * np.outer(xm, ym),
        float(stats["syyv"][0]) - 2 * float(ym @ syv) + nv * float(ym @ ym),
        nv,
    )


@dataclass
class _LevelStep:
    """x' = x P and y' = y - x B with P = I - EL E' and B = EL F': per target, the context
    mean (EL holds 1/L on that target's context columns) subtracted from its context and its
    outputs. Kept low-rank, so no n_in x n_in matrix is formed."""

    e: np.ndarray  # (n_in, t) indicator of target j's context columns
    el: np.ndarray  # e / L_j
    f: np.ndarray  # (n_out, t) indicator of target j's outputs
    cols: list[np.ndarray]  # target j's context columns: where e[:, j] is 1

    @classmethod
    def from_layout(cls, level_x: np.ndarray, level_y: np.ndarray) -> _LevelStep:
        t = int(level_y.max())
        e = (level_x[:, None] == np.arange(1, t + 1)).astype(np.float64)
        f = (level_y[:, None] == np.arange(1, t + 1)).astype(np.float64)
        cols = [np.flatnonzero(e[:, j]) for j in range(t)]
        return cls(e, e / np.maximum(e.sum(0), 1.0), f, cols)

    # P's update touches only the context columns of the targets (one in 15 on Victoria), so
    # it is subtracted there instead of forming (a EL) E', a second n_in x n_in matrix.
    def right(self, a: np.ndarray, copy: bool = True) -> np.ndarray:  # a P
        level = a @ self.el
        out = a.copy() if copy else a
        for j, cols in enumerate(self.cols):
            out[:, cols] -= level[:, j : j + 1]
        return out

    def left(self, a: np.ndarray, copy: bool = True) -> np.ndarray:  # P' a
        level = self.el.T @ a
        out = a.copy() if copy else a
        for j, cols in enumerate(self.cols):
            out[cols] -= level[j]
        return out

    def times_b(self, a: np.ndarray) -> np.ndarray:  # a B
        return (a @ self.el) @ self.f.T

    def _trace_b(self, a: np.ndarray) -> float:  # sum(B * a) for an (n_in, n_out) a
        return float(np.sum((self.el.T @ a) * self.f.T))

    def apply(self, c: _Centred) -> _Centred:
        gb, vb = self.times_b(c.gram), self.times_b(c.cxx)
        return _Centred(
            self.right(c.xm[None])[0],
            c.ym - self.times_b(c.xm[None])[0],
            self.left(self.right(c.gram), copy=False),
            self.left(c.xty - gb, copy=False),
            self.left(self.right(c.cxx), copy=False),
            self.left(c.cxy - vb, copy=False),
            c.cyy - 2 * self._trace_b(c.cxy) + self._trace_b(vb),
            c.nv,
        )

    def solver(self, gram: np.ndarray, solve: Solve) -> Solve:
        """Solves with the levelled X'X, P'GP + lam I, from solves with G + lam I. With
        U = [E, G EL] and M = [[EL' G EL, -I], [-I, 0]], P'GP = G + U M U' (rank 2t), so
        Woodbury's identity needs a (2t)^2 system per solve instead of a new factor."""
        t = self.e.shape[1]
        gl = gram @ self.el
        u = np.concatenate([self.e, gl], axis=1)
        eye = np.eye(t)
        m_inv = np.block([[np.zeros((t, t)), -eye], [-eye, -(self.el.T @ gl)]])

        def solve_levelled(i: int, b: np.ndarray) -> np.ndarray:
            ab, au = solve(i, b), solve(i, u)
            return ab - au @ np.linalg.solve(m_inv + u.T @ au, u.T @ ab)

        return solve_levelled

    def to_raw(self, w: np.ndarray) -> np.ndarray:
        """The weight on raw inputs of a fit on levelled ones: P w + B."""
        return w - self.e @ (self.el.T @ w) + self.el @ self.f.T


def walk_alphas(
    val_error: Callable[[int], float],
    alphas: tuple[float, ...] = RIDGE_ALPHAS,
    start_at: float = WALK_START,
) -> int:
    """The index in ``alphas`` to use: walk the log grid from ``start_at`` while the
    validation error falls. Each Cholesky of the (L*C + H*K)^2 system costs seconds, and the
    error is unimodal in alpha in practice."""
    best = alphas.index(start_at) if start_at in alphas else 0
    for step in (-1, 1):
        start = best
        while 0 <= best + step < len(alphas) and val_error(best + step) < val_error(best):
            best += step
        if best != start:
            break
    return best


@dataclass
class _Solver:
    """Solves (G + alpha * scale * I) w = b for the centred raw X'X G, one Cholesky factor per
    alpha, shared by both designs: the levelled X'X differs from G by a rank-2t term
    (``_LevelStep.solver``), so the window design needs no factor of its own. The factors
    live until the fit ends: one per alpha either walk visits (three on the demo, 0.3 GB
    each)."""

    gram: np.ndarray
    alphas: tuple[float, ...] = RIDGE_ALPHAS
    factors: dict[int, tuple[np.ndarray, bool]] = field(default_factory=dict)

    @property
    def scale(self) -> float:
        return float(np.mean(np.diag(self.gram))) or 1.0

    def __call__(self, i: int, b: np.ndarray) -> np.ndarray:
        if i not in self.factors:
            a = self.gram.copy()
            a.flat[:: len(a) + 1] += self.alphas[i] * self.scale
            self.factors[i] = linalg.cho_factor(a, overwrite_a=True, check_finite=False)
        return linalg.cho_solve(self.factors[i], b, check_finite=False)


ROWS_BELOW = 0.5
"""Solve from the rows (``ridge_rows``) when they number less than this share of the inputs:
below it the n x n factors are cheaper than one of the inputs' and the rows fit in memory."""


def _walk(c: _Centred, solve: Solve, alphas: tuple[float, ...]) -> tuple[float, int, np.ndarray]:
    """(validation MSE, alpha index, weights) of the alpha the walk settles on."""
    fits: dict[int, tuple[float, np.ndarray]] = {}

    def val_error(i: int) -> float:
        if i not in fits:
            w = solve(i, c.xty)
            sse = float(np.sum(w * (c.cxx @ w)) - 2 * np.sum(w * c.cxy) + c.cyy)
            fits[i] = (sse / (c.nv * w.shape[1]), w)
        return fits[i][0]

    best = walk_alphas(val_error, alphas)
    val_error(best)
    return fits[best][0], best, fits[best][1]


def solve_ridge(
    stats: Stats,
    levels: tuple[str, ...] = LEVELS,
    alphas: tuple[float, ...] = RIDGE_ALPHAS,
) -> LinearFit:
    """The ridge from sums: for each design in ``levels`` the walk over ``alphas`` on
    validation, then the design with the lower validation MSE (ties keep ``raw``)."""
    t0 = time.perf_counter()
    raw = _centred(stats)
    solve: Solve = _Solver(raw.gram, alphas)
    step = _LevelStep.from_layout(stats["level_x"], stats["level_y"])
    best: tuple[float, str, int, np.ndarray] | None = None
    for level in levels:
        if level == "raw":
            err, i, w = _walk(raw, solve, alphas)
        else:
            err, i, w = _walk(step.apply(raw), step.solver(raw.gram, solve), alphas)
        if best is None or err < best[0]:
            best = (err, level, i, w if level == "raw" else step.to_raw(w))
    if best is None:
        raise ValueError("no ridge design to solve")
    _, level, i, w = best
    return LinearFit(w, raw.xm, raw.ym, alphas[i], time.perf_counter() - t0, level)


def fit_linear(data: ForecastData) -> LinearFit:
    """Ridge on every training window (stride 1; one a day with ``data.match_origins``), alpha
    and design chosen on the validation windows. Cached on ``data``: the network's skip path
    and the `linear` baseline share one fit."""
    cached = data.cache.get("ridge")
    if cached is not None:
        return cached
    t0 = time.perf_counter()
    fit = _fit_windows(data)
    fit.fit_s = time.perf_counter() - t0
    data.cache["ridge"] = fit
    return fit


def refit_linear(data: ForecastData, fit: LinearFit, train: np.ndarray) -> LinearFit:
    """``fit``'s design and alpha (chosen on validation) fitted again on the windows ``train``."""
    t0 = time.perf_counter()
    out = _fit_windows(data, (train, data.val.origins), (fit.level,), (fit.alpha,))
    out.fit_s = time.perf_counter() - t0
    return out


def _fit_windows(
    data: ForecastData,
    origins: tuple[np.ndarray, np.ndarray] | None = None,
    levels: tuple[str, ...] = LEVELS,
    alphas: tuple[float, ...] = RIDGE_ALPHAS,
) -> LinearFit:
    """``solve_ridge`` on the windows of ``ridge_statistics``, or the same fit from the design
    rows (``ridge_rows``) when the training rows number less than ``ROWS_BELOW`` of the inputs
    (one window a day: ``linear_clock``, ``data.match_origins``)."""
    train, val = ridge_origins(data, origins)
    level_x, level_y = level_layout(data)
    folds = data.n_targets if data.channel_independent else 1
    if len(train) * folds >= ROWS_BELOW * len(level_x):
        return solve_ridge(ridge_statistics(data, origins=(train, val)), levels, alphas)
    t0 = time.perf_counter()
    x, y = (a.astype(np.float64) for a in design_matrix(data, train))
    xv, yv = (a.astype(np.float64) for a in design_matrix(data, val))
    step = _LevelStep.from_layout(level_x, level_y)
    fit = ridge_rows.solve_rows(x, y, xv, yv, step, levels, alphas, walk_alphas)
    alpha = alphas[fit.alpha_index]
    return LinearFit(fit.weight, fit.x_mean, fit.y_mean, alpha, time.perf_counter() - t0, fit.level)


def clock_minutes(data: ForecastData, positions: np.ndarray) -> np.ndarray:
    """Local minute of the day of each position of ``data.frame``."""
    index = data.frame.index[positions]
    return np.asarray(index.hour * 60 + index.minute)


def fit_linear_at(data: ForecastData, minute: int) -> LinearFit:
    """The ridge for forecasts issued at one clock time: fitted on the training windows (stride
    1) whose origin is at local minute ``minute`` of the day, alpha and design chosen on the
    validation windows from that minute (every day's, whatever ``data.val_origins`` says).
    Each horizon step is then one clock time, so the ridge learns a response per time of day
    (the ``linear_clock`` baseline). Cached on ``data`` per minute."""
    key = f"ridge@{minute}"
    cached = data.cache.get(key)
    if cached is not None:
        return cached
    t0 = time.perf_counter()
    fit = _fit_windows(data, clock_origins(data, minute))
    fit.fit_s = time.perf_counter() - t0
    data.cache[key] = fit
    return fit


def clock_origins(data: ForecastData, minute: int) -> tuple[np.ndarray, np.ndarray]:
    """The complete training (stride 1) and validation windows that start at local minute
    ``minute`` of the day: what ``fit_linear_at`` fits and validates on. DataError when
    either has none."""
    L, H = data.context_length, data.horizon
    train = np.arange(L, data.val_start - H + 1)
    val = np.arange(max(data.val_start, L), data.test_start - H + 1)
    train, val = (complete_origins(data, o[clock_minutes(data, o) == minute]) for o in (train, val))
    if len(train) == 0 or len(val) == 0:
        raise DataError(
            f"{data.report.origin}: no complete {'training' if len(train) == 0 else 'validation'}"
            f" window starts at {minute // 60:02d}:{minute % 60:02d} for a ridge of that clock "
            "time; use more data or leave linear_clock out of eval.baselines"
        )
    return train, val
