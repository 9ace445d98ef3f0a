"""The skip path's ridge, fitted across clients from summed sufficient statistics.

Each client sends sums over its own windows (counts, sums of x and y, X'X, X'Y, and the same on
its validation windows plus y'y); the server adds them up and solves the ridge exactly as
``greentune.evaluate.ridge.fit_linear`` would on the pooled windows: the same stride-1
training windows, the same alpha grid and design (raw or window-levelled) chosen on the pooled
validation error. So the federated
start equals the centralised ridge on pooled data (up to float64 rounding), in one round.

The sums are of scaled values (each client's own scaler), so the pooled fit is the ridge of
the union of the clients' standardised windows. What the server sees: sums over thousands of
windows, never a window; without secure aggregation it does see each client's sums, which the
docs state; with it (``federated.secure_aggregation``, ``secagg.secure_sums``) only their total.
"""

from __future__ import annotations

import numpy as np

from greentune.errors import DataError
from greentune.evaluate.ridge import (
    KEYS,
    LAYOUT_KEYS,
    LinearFit,
    Stats,
    ridge_statistics,
    solve_ridge,
)

__all__ = ["KEYS", "add_statistics", "ridge_statistics", "solve_pooled"]


def add_statistics(parts: list[Stats]) -> Stats:
    """The element-wise sum of the clients' statistics (what secure aggregation would give);
    the layout (which columns are which target's context) is the same for every client and is
    taken once."""
    if not parts:
        raise DataError("no client sent ridge statistics")
    shapes = {k: parts[0][k].shape for k in KEYS if k in parts[0]}
    for i, part in enumerate(parts, start=1):
        bad = [k for k in KEYS if k not in part or part[k].shape != shapes.get(k)]
        bad += [k for k in LAYOUT_KEYS if k not in bad and not np.array_equal(part[k], parts[0][k])]
        if bad:
            raise DataError(
                f"client reply {i}: ridge statistics {', '.join(bad)} missing, of another "
                "shape or another layout "
                "(every client needs the same columns, context_length and horizon)"
            )
    summed = {k: np.sum([p[k] for p in parts], axis=0) for k in KEYS if k not in LAYOUT_KEYS}
    return summed | {k: parts[0][k] for k in LAYOUT_KEYS}


def solve_pooled(stats: Stats) -> LinearFit:
    """The ridge of the pooled windows: ``fit_linear``'s solver (alpha walk and design chosen
    on the pooled validation windows) on the summed statistics."""
    return solve_ridge(stats)
