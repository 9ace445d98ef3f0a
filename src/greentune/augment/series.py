"""Augmentations of forecast windows (Iwana & Uchida's survey names them): jitter, scaling,
magnitude warping, window slicing and mixup, on a batch of scaled windows.

A batch holds ``past`` (B, L, C: targets first, then past-only covariates, then known
covariates), ``future`` (B, H, K: the known covariates over the horizon), ``y`` (B, H, T) and,
for a hybrid, ``base`` (B, H, T: the base forecast of ``y``, so it moves with ``y``). Values are
in scaled units (each column standardised on the training split), so scaling acts on the
deviations from the training mean. Only the samples drawn for augmentation change.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.interpolate import CubicSpline

from greentune.config import AugmentConfig

Batch = dict[str, torch.Tensor]

WARP_KNOTS = 4
"""Knots of the magnitude-warping curve (Um et al. 2017 use 4)."""


def augment_series(
    batch: Batch, cfg: AugmentConfig, n_targets: int, rng: np.random.Generator
) -> Batch:
    """A new batch with the switched-on augmentations applied, in a fixed order (slice, warp,
    scale, jitter, mixup), each to a fresh draw of ``cfg.p`` of the samples."""
    out = {k: v.clone() for k, v in batch.items()}
    n = out["past"].shape[0]
    if cfg.window_slice < 1.0:
        window_slice(out, cfg.window_slice, n_targets, rng, _chosen(rng, n, cfg.p))
    if cfg.magnitude_warp > 0:
        magnitude_warp(out, cfg.magnitude_warp, n_targets, rng, _chosen(rng, n, cfg.p))
    if cfg.scaling > 0:
        scaling(out, cfg.scaling, n_targets, rng, _chosen(rng, n, cfg.p))
    if cfg.jitter > 0:
        jitter(out, cfg.jitter, n_targets, rng, _chosen(rng, n, cfg.p))
    if cfg.mixup > 0:
        mixup(out, cfg.mixup, rng, _chosen(rng, n, cfg.p))
    return out


def _chosen(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    return rng.random(n) < p


def _factor(values: np.ndarray, chosen: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """Per-sample factors, 1 where a sample is not chosen, as a tensor like ``like``."""
    values = np.where(chosen.reshape((-1,) + (1,) * (values.ndim - 1)), values, 1.0)
    return torch.as_tensor(values, dtype=like.dtype, device=like.device)


def _scale_targets(batch: Batch, factors: torch.Tensor, n_targets: int) -> None:
    """Multiply the targets by ``factors`` (B, 1) or (B, L + H) over context and horizon."""
    context = batch["past"].shape[1]
    if factors.shape[1] == 1:
        past_f, horizon_f = factors, factors
    else:
        past_f, horizon_f = factors[:, :context], factors[:, context:]
    batch["past"][..., :n_targets] *= past_f.unsqueeze(-1)
    batch["y"] *= horizon_f.unsqueeze(-1)
    if "base" in batch:
        batch["base"] *= horizon_f.unsqueeze(-1)


def jitter(
    batch: Batch, sigma: float, n_targets: int, rng: np.random.Generator, chosen: np.ndarray
) -> None:
    """Gaussian noise on the context's targets (inputs only: the labels stay clean)."""
    past = batch["past"]
    noise = rng.normal(0.0, sigma, size=(*past.shape[:2], n_targets))
    noise[~chosen] = 0.0
    past[..., :n_targets] += torch.as_tensor(noise, dtype=past.dtype)


def scaling(
    batch: Batch, sigma: float, n_targets: int, rng: np.random.Generator, chosen: np.ndarray
) -> None:
    """One factor ~ N(1, sigma) per window, on its targets in context and horizon alike."""
    n = batch["past"].shape[0]
    factors = _factor(rng.normal(1.0, sigma, size=(n, 1)), chosen, batch["past"])
    _scale_targets(batch, factors, n_targets)


def warp_curves(rng: np.random.Generator, n: int, length: int, sigma: float) -> np.ndarray:
    """(n, length) smooth random factors: a cubic spline through ``WARP_KNOTS`` knots ~ N(1,
    sigma) spread evenly over the window, ends included."""
    knots_x = np.linspace(0, length - 1, WARP_KNOTS)
    knots_y = rng.normal(1.0, sigma, size=(WARP_KNOTS, n))
    return CubicSpline(knots_x, knots_y, axis=0)(np.arange(length)).T


def magnitude_warp(
    batch: Batch, sigma: float, n_targets: int, rng: np.random.Generator, chosen: np.ndarray
) -> None:
    """The targets times a smooth curve over the whole window (context then horizon)."""
    n, context = batch["past"].shape[:2]
    length = context + batch["y"].shape[1]
    factors = _factor(warp_curves(rng, n, length, sigma), chosen, batch["past"])
    _scale_targets(batch, factors, n_targets)


def window_slice(
    batch: Batch, keep: float, n_targets: int, rng: np.random.Generator, chosen: np.ndarray
) -> None:
    """Crop ``keep`` of the window at a random place and stretch it back to full length, every
    channel through the same time map (Le Guennec et al. 2016). Past-only covariates have no
    horizon values; their last context value stands in there."""
    past, future, y = batch["past"], batch["future"], batch["y"]
    context, channels = past.shape[1:]
    horizon, known = y.shape[1], future.shape[-1]
    rows = np.flatnonzero(chosen)
    if len(rows) == 0:
        return
    ahead = torch.cat(
        [y, past[:, -1:, n_targets : channels - known].expand(-1, horizon, -1), future], dim=-1
    )
    whole = torch.cat([past, ahead], dim=1)  # (B, L + H, C)
    parts = [whole]
    if "base" in batch:  # the base forecast follows the targets' time map
        parts.append(torch.cat([past[..., :n_targets], batch["base"]], dim=1))
    length = context + horizon
    span = keep * (length - 1)
    starts = rng.uniform(0.0, (length - 1) - span, size=len(rows))
    positions = starts[:, None] + np.linspace(0.0, span, length)[None, :]  # (R, L + H)
    lo = np.floor(positions).astype(np.int64)
    hi = np.minimum(lo + 1, length - 1)
    w = torch.as_tensor(positions - lo, dtype=past.dtype).unsqueeze(-1)
    r = torch.as_tensor(rows)[:, None]
    lo_t, hi_t = torch.as_tensor(lo), torch.as_tensor(hi)
    resampled = [part[r, lo_t] * (1 - w) + part[r, hi_t] * w for part in parts]
    sliced = resampled[0]
    rows_t = torch.as_tensor(rows)
    past[rows_t] = sliced[:, :context]
    y[rows_t] = sliced[:, context:, :n_targets]
    future[rows_t] = sliced[:, context:, channels - known :]
    if "base" in batch:
        batch["base"][rows_t] = resampled[1][:, context:]


def mixup(batch: Batch, alpha: float, rng: np.random.Generator, chosen: np.ndarray) -> None:
    """Each chosen window becomes lam x itself + (1 - lam) x another window of the batch, with
    lam ~ Beta(alpha, alpha), inputs and targets alike (Zhang et al. 2018)."""
    n = batch["past"].shape[0]
    partner = torch.as_tensor(rng.permutation(n))
    lam = rng.beta(alpha, alpha, size=n)
    for key in ("past", "future", "y", "base"):
        if key not in batch:
            continue
        value = batch[key]
        weights = _factor(lam.reshape((-1,) + (1,) * (value.ndim - 1)), chosen, value)
        batch[key] = weights * value + (1 - weights) * value[partner]
