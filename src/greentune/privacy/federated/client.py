"""A federated client's work, free of Flower: its data, the network, one round of local steps.

A client trains through the same pieces as ``greentune run`` (``prepare`` -> ``build_model``
-> ``train`` with ``max_steps``; ``greentune.tasks.forecast`` scores it), on its own series
with its own split and scaler. Only the trainable parameters cross the wire
(``trainable_arrays`` / ``load_trainable``); the frozen backbone is the packaged pretrained
one on every client and the frozen ridge weights are the federated fit, sent once.

A process may serve several clients (Flower's simulation engine runs clients on a few
actors): ``open_client`` caches each client's prepared data and network by partition.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from dataclasses import replace as copy_with
from typing import Any

import numpy as np
import torch

from greentune.config import RunConfig, replace
from greentune.data.windows import ForecastData
from greentune.errors import ConfigError
from greentune.evaluate.ridge import LinearFit, complete_origins, design_matrix, fit_linear
from greentune.models.forecaster import Forecaster
from greentune.privacy.federated.partitions import check_model, client_data, ridge_start
from greentune.tasks.base import mean_loss
from greentune.tasks.forecast.batches import ForecastBatches, make_batches
from greentune.tasks.forecast.model import build_model
from greentune.tasks.forecast.predict import (
    evaluate_forecast,
    predict_scaled,
    season_steps,
    to_forecast,
)
from greentune.tasks.forecast.skip import SkipInit, transfer_skip
from greentune.train.callbacks import Callback, SetupContext
from greentune.train.checkpoint import unwrap
from greentune.train.loop import configure_threads, train

Log = Callable[[str], None]
CACHE_SIZE = 4
"""Clients kept prepared per process: a simulation actor serves several in turn."""


@dataclass
class Local:
    """One client as its process holds it."""

    name: str
    cfg: RunConfig
    """The client's resolved config: its target, and train.* set for rounds of local steps."""
    data: ForecastData
    train_b: ForecastBatches
    val_b: ForecastBatches
    tokenizer: Any = None
    model: Forecaster | None = None
    skip_id: str = ""
    """Which skip fit ``model`` was built with (a new federated fit rebuilds it)."""
    notes: list[str] = field(default_factory=list)
    """What the client's start chose (the seasonal period), for its own run directory."""


_CACHE: OrderedDict[tuple[str, str], Local] = OrderedDict()


def round_config(cfg: RunConfig) -> RunConfig:
    """train.* for one round: ``local_steps`` steps at a constant rate, no early stopping (the
    server keeps the best round on the clients' validation loss), no checkpoints."""
    fed = cfg.federated
    return replace(
        cfg,
        train={
            "max_steps": fed.local_steps,
            "epochs": 10**6,
            "schedule": "constant",
            "warmup_ratio": 0.0,
            "patience": None,
        },
    )


def open_client(cfg: RunConfig, name: str, key: str) -> Local:
    """The client ``name``'s data and batches, prepared once per process (``key``: the run's
    config, so a new run does not reuse another's client)."""
    cached = _CACHE.get((key, name))
    if cached is not None:
        _CACHE.move_to_end((key, name))
        return cached
    check_model(cfg)
    client_cfg, data = client_data(round_config(cfg), name)
    configure_threads(client_cfg.train)
    train_b = make_batches(client_cfg, data, data.train.origins, None)
    val_b = make_batches(client_cfg, data, data.val.origins, None)
    local = Local(name, client_cfg, data, train_b, val_b)
    _CACHE[(key, name)] = local
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return local


def network(local: Local, skip: SkipInit | None, skip_id: str) -> Forecaster:
    """The client's network, built once (seeded: every client builds the same start) with the
    federated skip fit; rebuilt when the fit changes."""
    if local.model is None or local.skip_id != skip_id:
        total = local.cfg.federated.rounds * local.cfg.federated.local_steps
        local.model, local.tokenizer = build_model(local.cfg, local.data, total, skip)
        local.skip_id = skip_id
    return local.model


def alone(local: Local) -> Local | None:
    """This client as it would be outside the federation, for the local-only reference: the
    same network (the same seeded start of everything that trains) with the skip path fitted
    on its windows alone (its own ridge, by the pooled fit's solver, and its own residual
    offsets), or from the same transferred start (``model.skip_init: transfer`` pools
    nothing). None where the network starts from nothing fitted (a seasonal, random or no skip
    path). The federated start's ridge is the pooled one: a reference trained from it would
    have learnt from the other clients' data."""
    if local.cfg.model.skip_init == "transfer":  # pooled nothing: the same start alone
        skip = transfer_skip(local.cfg, local.data, lambda m: None)
    elif not ridge_start(local.cfg):
        return None
    else:
        fit = fit_linear(local.data)
        skip = SkipInit(fit, residual_offsets(local, fit))
    total = local.cfg.federated.rounds * local.cfg.federated.local_steps
    model, tokenizer = build_model(local.cfg, local.data, total, skip)
    return copy_with(local, model=model, tokenizer=tokenizer, skip_id="alone", notes=[])


def personal_skip(local: Local, pooled: SkipInit) -> tuple[SkipInit, float]:
    """This client's skip start under ``federated.personal_skip``: the weights a x its own
    ridge + (1 - a) x the federated one, a in [0, 1] the least-squares blend of the start's
    point forecast (the median's output: the fit plus its residual offset) on the client's
    validation windows, whose MSE is quadratic in a (closed form, clipped). The intercept and
    the residual offsets stay the federated fit's, so the trainable arrays (the skip path's
    bias among them) start the same on every client, as the server's shared start needs; only
    the frozen weights are the client's own, and they never travel."""
    own = fit_linear(local.data)
    fit, data, quantiles = pooled.fit, local.data, local.cfg.model.quantiles
    intercept = fit.y_mean - fit.x_mean @ fit.weight
    shift = pooled.offsets[quantiles.index(0.5) if 0.5 in quantiles else 0]
    x, y = design_matrix(data, complete_origins(data, data.val.origins))
    start = (x @ fit.weight + intercept + shift).astype(np.float64)
    gap = (x @ (own.weight - fit.weight)).astype(np.float64)
    norm = float(np.sum(gap * gap))
    # own and federated fits that agree to rounding leave nothing to blend
    a = 0.0
    if norm > 1e-12 * float(np.sum(start * start)):
        a = float(np.clip(np.sum((y - start) * gap) / norm, 0.0, 1.0))
    weight = a * own.weight + (1 - a) * fit.weight
    blend = LinearFit(weight, np.zeros_like(fit.x_mean), intercept, fit.alpha, 0.0, fit.level)
    return SkipInit(blend, pooled.offsets), a


def trainable_arrays(model: torch.nn.Module, float16: bool = False) -> dict[str, np.ndarray]:
    """What travels: the trainable tensors by name (the PEFT adapter, the head, the biases)."""
    dtype = np.float16 if float16 else np.float32
    return {
        name: p.detach().cpu().numpy().astype(dtype)
        for name, p in unwrap(model).named_parameters()
        if p.requires_grad
    }


@torch.no_grad()
def load_trainable(model: torch.nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Set the trainable tensors from ``arrays`` (names and shapes must match exactly)."""
    params = {n: p for n, p in unwrap(model).named_parameters() if p.requires_grad}
    missing, extra = set(params) - set(arrays), set(arrays) - set(params)
    if missing or extra:
        raise ConfigError(
            "the global model's parameters do not match this client's network "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}): every client "
            "needs the same config (model, peft, data columns, context and horizon)"
        )
    for name, p in params.items():
        value = torch.from_numpy(np.asarray(arrays[name], dtype=np.float32))
        if value.shape != p.shape:
            raise ConfigError(
                f"global parameter {name}: shape {tuple(value.shape)}, "
                f"this client's is {tuple(p.shape)}"
            )
        p.copy_(value)


class Proximal(Callback):
    """FedProx: the gradient of mu/2 ||w - w_global||^2 added to each step's update. A step
    pre-hook on the inner optimizer, so under DP-SGD it joins after clipping and noise (the
    term depends on public weights only)."""

    def __init__(self, mu: float) -> None:
        self.mu = mu
        self.handle: Any = None

    def on_setup(self, ctx: SetupContext) -> None:
        params = [p for p in ctx.model.parameters() if p.requires_grad]
        anchor = [p.detach().clone() for p in params]
        optimizer = getattr(ctx.optimizer, "original_optimizer", ctx.optimizer)
        optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper

        def pre_step(*_: Any) -> None:
            for p, w0 in zip(params, anchor, strict=True):
                if p.grad is not None:
                    p.grad.add_(p.detach() - w0, alpha=self.mu)

        self.handle = optimizer.register_step_pre_hook(pre_step)

    def on_end(self, state: Any) -> None:
        if self.handle is not None:
            self.handle.remove()


def local_round(
    local: Local,
    arrays: dict[str, np.ndarray],
    seed: int,
    callbacks: list[Callback],
) -> tuple[dict[str, np.ndarray], float, int]:
    """``local_steps`` optimizer steps from the global ``arrays``: (trained arrays, mean
    training loss, samples seen)."""
    assert local.model is not None, "network() first"
    model = local.model
    load_trainable(model, arrays)
    # dropout draws from torch's global generator, whose state would otherwise depend on what
    # this process ran before (which clients a simulation actor served, in which order)
    torch.manual_seed(seed)
    result = train(model, local.train_b, local.cfg.train, seed, callbacks=callbacks)
    losses = [row["loss"] for row in result.state.history]
    loss = float(np.mean(losses)) if losses else float("nan")
    samples = result.state.samples
    float16 = local.cfg.federated.float16
    return trainable_arrays(model, float16), loss, samples


def validation_loss(local: Local, arrays: dict[str, np.ndarray]) -> float:
    assert local.model is not None, "network() first"
    load_trainable(local.model, arrays)
    return mean_loss(local.model, local.val_b, local.cfg.eval.batch_size)


def test_scores(local: Local, arrays: dict[str, np.ndarray] | None) -> dict[str, float]:
    """The test metrics of the network (at ``arrays``) on this client's own test windows."""
    assert local.model is not None, "network() first"
    if arrays is not None:
        load_trainable(local.model, arrays)
    data, cfg = local.data, local.cfg
    origins = data.test.origins
    out = predict_scaled(local.model, make_batches(cfg, data, origins, None), cfg.eval.batch_size)
    fc = to_forecast(data, out, cfg.model.quantiles)
    return evaluate_forecast(data, origins, fc, season_steps(data, cfg.eval.season_length))


def skip_from_arrays(arrays: dict[str, np.ndarray]) -> SkipInit:
    fit = LinearFit(
        arrays["weight"], arrays["x_mean"], arrays["y_mean"], float(arrays["alpha"][0]), 0.0
    )
    return SkipInit(fit, arrays["offsets"])


def skip_to_arrays(skip: SkipInit) -> dict[str, np.ndarray]:
    f = skip.fit
    return {
        "weight": f.weight,
        "x_mean": f.x_mean,
        "y_mean": f.y_mean,
        "alpha": np.asarray([f.alpha]),
        "offsets": skip.offsets,
    }


def residual_offsets(local: Local, fit: LinearFit) -> np.ndarray:
    """(Q, H*T) residual quantiles of the pooled fit on this client's training windows."""
    quantiles = local.cfg.model.quantiles
    if not quantiles:
        return np.zeros((1, fit.weight.shape[1]))
    return fit.residual_quantiles(local.data, local.data.train.origins, quantiles)


def drop_cached() -> None:
    """Forget every prepared client (tests; a new run in the same process)."""
    _CACHE.clear()
