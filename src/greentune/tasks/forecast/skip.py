"""The forecaster's linear skip path: a ridge fit (the `linear` baseline's) that the network
starts from, with each quantile offset by the ridge's residual quantile. Rank 0 fits it once and
sends it to the other ranks; it is saved beside the checkpoints and reused on resume."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from greentune.config import RunConfig
from greentune.data.windows import ForecastData
from greentune.distributed import ranks
from greentune.errors import DataError
from greentune.evaluate.baselines import horizon_positions, seasonal_lags, steps_per
from greentune.evaluate.ridge import LEVEL_WORDS, LinearFit, complete_origins, fit_linear
from greentune.io import write_json
from greentune.rundir import list_checkpoints
from greentune.tasks.forecast.transfer import TRANSFER_FILE, transferred

Log = Callable[[str], None]
RIDGE_FILE = "ridge-skip.npz"
SEASONAL_FILE = "seasonal-skip.json"
"""The seasonal start's chosen period, beside the checkpoints: a resumed run keeps it."""
# in the key of a saved fit: a fit by an earlier solver (raw design only, channel-independent
# means over windows instead of rows) is fitted again
RIDGE_SOLVER = "sums-v2"


@dataclass
class SkipInit:
    """The ridge fit and, per quantile, its residual quantiles on the training windows."""

    fit: LinearFit
    offsets: np.ndarray
    """(Q, H*T) in scaled units; zeros for a point forecast."""


@torch.no_grad()
def init_skip(layer: torch.nn.Linear, init: SkipInit) -> None:
    """Start the skip path at the ridge forecast plus each quantile's residual quantile, and
    freeze its weights: Adam's first steps would otherwise scatter the ~10^6 ridge
    coefficients. The biases still train; the transformer learns what the ridge misses."""
    fit, q = init.fit, init.offsets.shape[0]
    weight = np.repeat(fit.weight.T, q, axis=0)  # output order (h, t, q)
    bias = (fit.y_mean - fit.x_mean @ fit.weight)[:, None] + init.offsets.T
    layer.weight.copy_(torch.from_numpy(weight))
    layer.bias.copy_(torch.from_numpy(bias.reshape(-1)))
    layer.weight.requires_grad_(False)


def ridge_skip(
    cfg: RunConfig, data: ForecastData, log: Log, cache: Path | None = None
) -> tuple[SkipInit | None, float]:
    """The ridge start of the skip path. With several processes rank 0 fits it and sends it to
    the others, which would otherwise burn the same CPU seconds for the same numbers. With a
    ``cache`` file the fit is saved once and a resumed run loads it instead of fitting again
    (on Victoria the fit is most of a short run's energy: a paused job would pay it per chunk)."""
    if not cfg.model.linear_skip or cfg.model.skip_init in ("random", "lightgbm"):
        return None, 0.0
    if cfg.model.skip_init == "transfer":
        saved = cache.with_name(TRANSFER_FILE) if cache is not None else None
        return transfer_skip(cfg, data, log, saved), 0.0
    if cfg.model.skip_init == "seasonal":
        saved = cache.with_name(SEASONAL_FILE) if cache is not None else None
        trained = saved is not None and bool(list_checkpoints(saved.parent))
        return seasonal_skip(data, max(1, len(cfg.model.quantiles)), log, saved, trained), 0.0
    if ranks.world_size() == 1:
        return _cached_ridge_skip(cfg, data, log, cache)
    sent: tuple[SkipInit, float] | DataError | None = None
    if ranks.is_main():
        try:
            sent = _cached_ridge_skip(cfg, data, log, cache)
        except DataError as exc:  # every rank must leave the broadcast, with the same error
            sent = exc
    sent = ranks.broadcast(sent)
    if isinstance(sent, DataError) or sent is None:
        raise sent or DataError("the ridge fit did not reach this rank")
    data.cache.setdefault("ridge", sent[0].fit)
    return sent


def seasonal_skip(
    data: ForecastData,
    quantiles: int,
    log: Log,
    saved: Path | None = None,
    trained: bool = False,
) -> SkipInit:
    """The skip path as a seasonal naive: each horizon step copies its target one week earlier,
    one day earlier, or the mean of the two, whichever has the lowest MSE on the validation
    windows (periods that do not fit the context are left out; the last value when not even
    a day does). Fitted on nothing, so a private run can start from it: validation is not
    trained on, and the choice is among three fixed forecasts, as early stopping chooses
    among epochs. With ``saved`` (beside the checkpoints) the choice is written once and a
    resumed run keeps it. ``trained``: something was trained from this start before (its
    checkpoints, a federated client's rounds); without a saved choice it was the week (the one
    rule before the choice), which it keeps."""
    candidates = seasonal_candidates(data)
    key = _seasonal_key(data)
    label = _saved_choice(saved, key, candidates)
    if label is None and trained:  # the data moved since, but the start was trained on this
        label = _saved_choice(saved, None, candidates)
    if label is not None:
        how = f"kept from {saved}"
    elif trained:
        label = next(iter(candidates))
        how = "kept: it was trained on before the period was chosen"
    elif len(candidates) == 1:
        label, how = next(iter(candidates)), "the only period the context holds"
    else:
        errors = _validation_mse(data, candidates)
        if errors:
            label = min(errors, key=lambda k: errors[k])  # ties: the first, the longest period
            scores = ", ".join(f"{k} {v:.4g}" for k, v in errors.items())
            how = f"chosen on the validation windows (MSE, scaled: {scores})"
        else:
            label = next(iter(candidates))
            how = "no complete validation window to choose on, so the longest period"
    if saved is not None and ranks.is_main() and _saved_choice(saved, key, candidates) != label:
        saved.parent.mkdir(parents=True, exist_ok=True)  # before the first checkpoint
        write_json(saved, {"label": label, "key": key})
    log(f"skip path: the seasonal naive ({label}), {how}; fitted on nothing, weights frozen")
    fit = _lag_fit(data, candidates[label])
    return SkipInit(fit, np.zeros((quantiles, fit.weight.shape[1])))


def seasonal_candidates(data: ForecastData) -> dict[str, dict[int, float]]:
    """The seasonal naives the skip path may start at, longest period first:
    {label: {period in steps: share}}. A period as long as a shorter one's (coarse steps) is
    left out."""
    L, H = data.context_length, data.horizon
    periods: dict[str, int] = {}
    for period in ("7D", "1D"):
        m = steps_per(data, period)
        if m * -(-H // m) <= L and m not in periods.values():
            periods[f"{period} back"] = m
    if not periods:
        return {"last value": {1: 1.0}}
    out = {label: {m: 1.0} for label, m in periods.items()}
    if len(periods) == 2:
        week, day = periods.values()
        out["mean of 7D and 1D back"] = {week: 0.5, day: 0.5}
    return out


def _seasonal_key(data: ForecastData) -> str:
    """What the choice depends on: the data and its windows."""
    return json.dumps(_windows_key(data))


def _windows_key(data: ForecastData) -> list[object]:
    """The data and windows a saved start was made from."""
    index = data.frame.index
    return [
        data.columns,
        data.context_length,
        data.horizon,
        len(data.train),
        len(data.val),
        data.channel_independent,
        str(index[0]),
        str(index[-1]),
    ]


def _saved_choice(
    saved: Path | None, key: str | None, candidates: dict[str, dict[int, float]]
) -> str | None:
    """The label written for this data (``key``; None: for any data), if it is still a
    candidate (else None: choose)."""
    if saved is None or not saved.is_file():
        return None
    try:
        raw = json.loads(saved.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    label = raw.get("label")
    return label if key in (None, raw.get("key")) and label in candidates else None


def _lag_fit(data: ForecastData, shares: dict[int, float]) -> LinearFit:
    """The linear map (on the network's flattened inputs) of a mix of seasonal naives."""
    L, H = data.context_length, data.horizon
    t, channels = data.series_targets, data.series_channels
    n_in = L * channels + H * len(data.known_cols)
    weight = np.zeros((n_in, H * t))
    for m, share in shares.items():
        source = L + np.arange(H) - seasonal_lags(H, m)  # position in the context per step
        for h, pos in enumerate(source):
            for j in range(t):
                weight[pos * channels + j, h * t + j] += share
    return LinearFit(weight, np.zeros(n_in), np.zeros(H * t), 0.0, 0.0)


def _validation_mse(
    data: ForecastData, candidates: dict[str, dict[int, float]], chunk: int = 1024
) -> dict[str, float]:
    """Each candidate's MSE (scaled units) on the complete validation windows, read straight
    from the scaled targets (no design matrix); none complete: no errors."""
    origins = complete_origins(data, data.val.origins)
    if len(origins) == 0:
        return {}
    H, t = data.horizon, data.n_targets
    lags = {m: seasonal_lags(H, m) for shares in candidates.values() for m in shares}
    sse = dict.fromkeys(candidates, 0.0)
    for i in range(0, len(origins), chunk):
        at = horizon_positions(origins[i : i + chunk], H)  # (n, H) positions of the targets
        y = data.scaled[at, :t].astype(np.float64)
        for label, shares in candidates.items():
            pred = sum(share * data.scaled[at - lags[m], :t] for m, share in shares.items())
            sse[label] += float(np.sum((pred - y) ** 2))
    return {label: v / (len(origins) * H * t) for label, v in sse.items()}


def _cached_ridge_skip(
    cfg: RunConfig, data: ForecastData, log: Log, cache: Path | None
) -> tuple[SkipInit, float]:
    key = _ridge_key(cfg, data)
    loaded = _load_ridge_skip(cache, key) if cache else None
    if loaded is not None:
        log(f"skip path: ridge fit loaded from {cache} (fitted in {loaded[1]:.1f} s)")
        data.cache.setdefault("ridge", loaded[0].fit)
        return loaded
    skip, seconds = _fit_ridge_skip(cfg, data, log)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.tmp-{os.getpid()}.npz")
        f = skip.fit
        np.savez(
            tmp,
            weight=f.weight,
            x_mean=f.x_mean,
            y_mean=f.y_mean,
            offsets=skip.offsets,
            alpha=f.alpha,
            fit_s=f.fit_s,
            level=f.level,
            seconds=seconds,
            key=key,
        )
        os.replace(tmp, cache)
    return skip, seconds


def _ridge_key(cfg: RunConfig, data: ForecastData) -> str:
    """What the fit depends on: a saved fit is reused only for the same data and windows."""
    shape = _windows_key(data)  # the quantiles sit where fits saved before expect them
    return json.dumps([RIDGE_SOLVER, *shape[:6], list(cfg.model.quantiles), *shape[6:]])


def _load_ridge_skip(cache: Path, key: str) -> tuple[SkipInit, float] | None:
    """The saved fit, if it was fitted on this data (else None: fit again)."""
    if not cache.is_file():
        return None
    try:
        with np.load(cache) as z:
            if str(z["key"]) != key:
                return None
            level = str(z["level"]) if "level" in z.files else "raw"  # saved before levels
            fit = LinearFit(
                z["weight"], z["x_mean"], z["y_mean"], float(z["alpha"]), float(z["fit_s"]), level
            )
            return SkipInit(fit, z["offsets"]), float(z["seconds"])
    except (OSError, KeyError, ValueError):
        return None


def _fit_ridge_skip(cfg: RunConfig, data: ForecastData, log: Log) -> tuple[SkipInit, float]:
    t0 = time.perf_counter()
    fit = fit_linear(data)
    quantiles = cfg.model.quantiles
    offsets = (
        fit.residual_quantiles(data, data.train.origins, quantiles)
        if quantiles
        else np.zeros((1, fit.weight.shape[1]))
    )
    seconds = time.perf_counter() - t0
    log(
        f"skip path: ridge fit (alpha {fit.alpha:g}, {LEVEL_WORDS[fit.level]}) in "
        f"{seconds:.1f} s, weights frozen"
    )
    return SkipInit(fit, offsets), seconds


def transfer_skip(
    cfg: RunConfig, data: ForecastData, log: Log, saved: Path | None = None
) -> SkipInit:
    """The skip path of another run (``model.skip_from``, see ``transfer``) as this run's
    start; ``saved`` keeps it for a resume."""
    fit, offsets = transferred(cfg, data, log, saved)
    return SkipInit(fit, offsets)
