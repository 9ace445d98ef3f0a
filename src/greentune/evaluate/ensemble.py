"""Ensembles of forecasts: mean, median, and weights fitted on validation per horizon step.

Members are forecasts of the same origins (``Forecast``: point and quantiles, (N, H, T)).
Quantiles combine by averaging each level across members with the members' weights
(Vincentization: the quantile average of the members' distributions, which keeps the levels in
order), or by the median of each level for the median ensemble.

The weighted ensemble's weights are fitted on the validation windows only: per horizon step,
non-negative least squares of the observed values on the members' point forecasts, scaled to
sum to one (a convex combination, so it cannot extrapolate past its members). A step where NNLS
keeps no member falls back to equal weights.

``select_weights`` is ensemble selection (Caruana et al., ICML 2004, as auto-sklearn uses it) for
members scored by any loss, such as classifiers' class probabilities: greedy forward selection
with replacement on validation, the weights being how often each member was picked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
from scipy.optimize import nnls

from greentune.errors import ConfigError
from greentune.results import Forecast

Kind = Literal["mean", "median", "weighted"]
KINDS: tuple[str, ...] = ("mean", "median", "weighted")


def fit_weights(val: Mapping[str, Forecast], y: np.ndarray) -> np.ndarray:
    """(H, M) convex weights, one row per horizon step, members in ``val``'s order; ``y`` is
    (N, H, T) observed on the validation origins (NaN entries are left out)."""
    names = list(val)
    horizon = y.shape[1]
    weights = np.full((horizon, len(names)), 1.0 / len(names))
    for h in range(horizon):
        a = np.stack([val[n].point[:, h, :].ravel() for n in names], axis=1)
        b = y[:, h, :].ravel()
        ok = np.isfinite(b) & np.isfinite(a).all(axis=1)
        if ok.sum() < len(names):
            continue
        w, _ = nnls(a[ok], b[ok])
        if w.sum() > 0:
            weights[h] = w / w.sum()
    return weights


SELECT_ROUNDS = 25
"""Picks of ensemble selection: enough for weights in steps of 4 %; the best prefix is kept."""


def select_weights(
    val: Sequence[np.ndarray],
    loss: Callable[[np.ndarray], float],
    rounds: int = SELECT_ROUNDS,
) -> np.ndarray:
    """(M,) weights summing to one: ensemble selection on validation. Start from the member
    with the lowest ``loss``, then ``rounds - 1`` times add the member (with replacement, so a
    strong member gains weight) whose inclusion gives the mean with the lowest loss; the
    weights are the pick counts of the best prefix (the earliest of equal ones). ``val`` holds
    each member's validation scores, all of one shape."""
    if not val:
        raise ValueError("ensemble selection needs at least one member")
    if rounds < 1:
        raise ValueError(f"ensemble selection needs at least one round, got {rounds}")
    counts = np.zeros(len(val), dtype=np.int64)
    total = np.zeros_like(np.asarray(val[0], dtype=np.float64))
    best_loss, best_counts = np.inf, counts.copy()
    for k in range(1, rounds + 1):
        trial = [loss((total + v) / k) for v in val]
        i = int(np.argmin(trial))  # the first of equal losses: members keep their order
        counts[i] += 1
        total = total + val[i]
        if trial[i] < best_loss:
            best_loss, best_counts = trial[i], counts.copy()
    if best_counts.sum() == 0:
        raise ValueError("ensemble selection: no member has a finite validation loss")
    return best_counts / best_counts.sum()


def combine(
    kind: str, members: Mapping[str, Forecast], weights: np.ndarray | None = None
) -> Forecast:
    """The ``kind`` ensemble of ``members`` (same origins); ``weights`` (H, M) for weighted."""
    if kind not in KINDS:
        raise ConfigError(f"eval.ensembles: unknown {kind!r}; valid choices: {', '.join(KINDS)}")
    names = list(members)
    if kind == "weighted" and weights is None:
        raise ValueError("a weighted ensemble needs weights fitted on validation")
    levels = _shared_levels(members)

    def pool(arrays: list[np.ndarray]) -> np.ndarray:
        stack = np.stack(arrays)  # (M, N, H, T)
        if kind == "median":
            return np.median(stack, axis=0)
        w = (
            np.full((stack.shape[2], len(names)), 1.0 / len(names))
            if kind == "mean"
            else np.asarray(weights)
        )
        return np.einsum("mnht,hm->nht", stack, w)

    point = pool([members[n].point for n in names])
    quantiles = None
    if levels:
        quantiles = {q: pool([_level(members[n], q) for n in names]) for q in levels}
        ordered = np.sort(np.stack([quantiles[q] for q in levels]), axis=0)
        quantiles = {q: ordered[i] for i, q in enumerate(levels)}
    return Forecast(point, quantiles)


def _shared_levels(members: Mapping[str, Forecast]) -> list[float]:
    """Quantile levels every member has (a member without quantiles gives none)."""
    sets = [set(f.quantiles or {}) for f in members.values()]
    return sorted(set.intersection(*sets)) if sets else []


def _level(fc: Forecast, q: float) -> np.ndarray:
    assert fc.quantiles is not None
    return fc.quantiles[q]


def member_windows(
    windows: list[dict[str, dict[str, float]]], own: str
) -> dict[str, dict[str, float]]:
    """The ledger windows an ensemble is billed for: every member's, each window once (a window
    nested in another one already billed, such as ``train/ridge-skip`` in ``train``, is left
    out), plus its own window ``own`` (validation forecasts and the weights) as fit."""
    out: dict[str, dict[str, float]] = {"fit": {own: 1.0}, "predict": {}}
    for part in ("fit", "predict"):
        for w in windows:
            for name, share in w.get(part, {}).items():
                out[part][name] = max(out[part].get(name, 0.0), share)
    everything = {n for shares in out.values() for n in shares}
    for shares in out.values():
        for name in list(shares):
            if any(name.startswith(parent + "/") for parent in everything):
                del shares[name]
    return out
