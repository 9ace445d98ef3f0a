"""The skip path's ridge, fitted across clients from summed sufficient statistics.

Each client sends sums over its own windows (counts, sums of x and y, X'X, X'Y, and the same on
its validation windows plus y'y); the server adds them up and solves the ridge exactly as
``greentune.evaluate.baselines.fit_linear`` would on the pooled windows: the same stride-1
training windows, the same alpha grid walked on the pooled validation error. So the federated
start equals the centralised ridge on pooled data (up to float64 rounding), in one round.

The sums are of scaled values (each client's own scaler), so the pooled fit is the ridge of
the union of the clients' standardised windows. What the server sees: sums over thousands of
windows, never a window; under a round without secure aggregation it does see each client's
sums, which the docs state.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import linalg

from greentune.data.windows import ForecastData
from greentune.errors import DataError
from greentune.evaluate.baselines import (
    RIDGE_ALPHAS,
    LinearFit,
    complete_origins,
    design_matrix,
    walk_alphas,
)

Stats = dict[str, np.ndarray]
KEYS = ("n", "sx", "sy", "sxx", "sxy", "nv", "sxv", "syv", "sxxv", "sxyv", "syyv")


def ridge_statistics(data: ForecastData, chunk: int = 2048) -> Stats:
    """A client's sums (float64) over its training windows (stride 1, complete ones) and its
    validation windows."""
    L, H = data.context_length, data.horizon
    train = complete_origins(data, np.arange(L, data.val_start - H + 1))
    val = complete_origins(data, data.val.origins)
    if len(train) == 0 or len(val) == 0:
        raise DataError(
            f"{data.report.origin}: no complete {'training' if len(train) == 0 else 'validation'}"
            " window for the federated ridge (gaps in every window): fill the gaps "
            "(data.fill_gaps) or give this client more data"
        )
    return {
        **_sums(data, train, chunk, ""),
        **_sums(data, val, chunk, "v"),
    }


def _sums(data: ForecastData, origins: np.ndarray, chunk: int, suffix: str) -> Stats:
    out: dict[str, np.ndarray] = {}
    for i in range(0, len(origins), chunk):
        x, y = design_matrix(data, origins[i : i + chunk])
        x, y = x.astype(np.float64), y.astype(np.float64)
        parts = {"sx": x.sum(0), "sy": y.sum(0), "sxx": x.T @ x, "sxy": x.T @ y}
        if suffix:
            parts["syy"] = np.asarray([np.sum(y * y)])
        for key, value in parts.items():
            out[key + suffix] = out.get(key + suffix, 0) + value
    out["n" + suffix] = np.asarray([float(len(origins))])
    return out


def add_statistics(parts: list[Stats]) -> Stats:
    """The element-wise sum of the clients' statistics (what secure aggregation would give)."""
    if not parts:
        raise DataError("no client sent ridge statistics")
    shapes = {k: parts[0][k].shape for k in KEYS}
    for i, part in enumerate(parts[1:], start=2):
        bad = [k for k in KEYS if k not in part or part[k].shape != shapes[k]]
        if bad:
            raise DataError(
                f"client reply {i}: ridge statistics {', '.join(bad)} missing or of another shape "
                "(every client needs the same columns, context_length and horizon)"
            )
    return {k: np.sum([p[k] for p in parts], axis=0) for k in KEYS}


def solve_pooled(stats: Stats) -> LinearFit:
    """The ridge of the pooled windows, alpha chosen on the pooled validation windows with the
    walk of ``fit_linear``."""
    t0 = time.perf_counter()
    n, nv = float(stats["n"][0]), float(stats["nv"][0])
    if n == 0 or nv == 0:
        raise DataError("no complete train/val window among the clients for the ridge")
    xm, ym = stats["sx"] / n, stats["sy"] / n
    gram = stats["sxx"] - n * np.outer(xm, xm)
    xty = stats["sxy"] - n * np.outer(xm, ym)
    scale = float(np.mean(np.diag(gram))) or 1.0
    eye = np.eye(len(gram))
    # validation error of w from sums: ||(X - xm) w - (Y - ym)||^2 expanded
    sxv, syv = stats["sxv"], stats["syv"]
    cxx = stats["sxxv"] - np.outer(sxv, xm) - np.outer(xm, sxv) + nv * np.outer(xm, xm)
    cxy = stats["sxyv"] - np.outer(sxv, ym) - np.outer(xm, syv) + nv * np.outer(xm, ym)
    cyy = float(stats["syyv"][0]) - 2 * float(ym @ syv) + nv * float(ym @ ym)
    fits: dict[int, tuple[float, np.ndarray]] = {}

    def val_error(i: int) -> float:
        if i not in fits:
            factor = linalg.cho_factor(gram + RIDGE_ALPHAS[i] * scale * eye, check_finite=False)
            w = linalg.cho_solve(factor, xty, check_finite=False)
            sse = float(np.sum(w * (cxx @ w)) - 2 * np.sum(w * cxy) + cyy)
            fits[i] = (sse / (nv * w.shape[1]), w)
        return fits[i][0]

    best = walk_alphas(val_error)
    val_error(best)
    return LinearFit(fits[best][1], xm, ym, RIDGE_ALPHAS[best], time.perf_counter() - t0)
