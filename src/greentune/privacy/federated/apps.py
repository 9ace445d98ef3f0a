"""Flower's ``ClientApp`` for greentune: each message's work metered on the client.

A client learns the run's config (model, PEFT, training; no data) from the server's messages
and takes its data from its own side: ``partition-id`` (Flower's simulation) or ``partition``
(a name or an index, ``flower-supernode --node-config``), and optionally ``data-path``,
``workdir`` and ``carbon`` from its node config. Its node state keeps the skip fit and, under
``privacy.dp``, its privacy accountant between rounds.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from greentune.config import RunConfig, build_config, replace
from greentune.data.shape import default_patch_len
from greentune.errors import ConfigError
from greentune.models.backbone import count_parameters
from greentune.privacy.federated import protocol as P
from greentune.privacy.federated.client import (
    Local,
    Proximal,
    local_round,
    network,
    open_client,
    personal_skip,
    residual_offsets,
    skip_from_arrays,
    skip_to_arrays,
    trainable_arrays,
    validation_loss,
)
from greentune.privacy.federated.partitions import (
    client_names,
    federation_config,
    ridge_start,
    skip_start,
)
from greentune.privacy.federated.results import client_test
from greentune.privacy.federated.ridge import ridge_statistics
from greentune.privacy.federated.secagg import as_fit_result, secure_gate, split_sums
from greentune.tasks.forecast.skip import seasonal_skip, transfer_skip
from greentune.train.callbacks import Callback


@dataclass
class Call:
    """One message as the work sees it."""

    arrays: dict[str, np.ndarray]
    config: Any
    """The server's ConfigRecord: run-config, server-round, proximal-mu."""
    state: Any
    """The node's state (a RecordDict kept between rounds on this client)."""
    node: dict[str, Any]
    """The node config: partition, data-path, workdir, carbon."""


Work = Callable[[Local, Call], tuple[dict[str, np.ndarray], dict[str, float]]]


def client_app(node: dict[str, Any] | None = None) -> Any:
    """The ``ClientApp``; ``node`` adds node-config keys (simulation passes the workdir)."""
    from flwr.clientapp import ClientApp

    app = ClientApp()
    extra = dict(node or {})

    def handler(work: Work) -> Callable[[Any, Any], Any]:
        return lambda msg, context: _handle(msg, context, work, extra)

    app.query("ridge")(handler(_ridge))
    app.query("offsets")(handler(_offsets))
    app.query("init")(handler(_init))
    app.train(mods=[secure_gate, as_fit_result])(handler(_train_or_sums))
    app.evaluate()(handler(_evaluate))
    app.evaluate("test")(handler(_test))
    return app


def _handle(msg: Any, context: Any, work: Work, extra: dict[str, Any]) -> Any:
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

    node = {**dict(context.node_config), **extra}
    cfg = _config(msg, node)
    name = _name(cfg, node)
    carbon = node.get("carbon") or cfg.federated.carbon.get(name)
    if carbon:
        cfg = replace(cfg, energy={"carbon": str(carbon)})
    arrays = P.to_arrays(msg.content[P.ARRAYS]) if P.ARRAYS in msg.content.array_records else {}
    key = hashlib.sha256(str(msg.content[P.CONFIG]["run-config"]).encode()).hexdigest()[:16]
    meter, window = _meter(cfg)
    try:
        with window("federate-client") as handle:
            local = open_client(cfg, name, key)
            out, metrics = work(local, Call(arrays, msg.content[P.CONFIG], context.state, node))
    finally:
        if meter is not None:
            meter.close()
    metrics.update(_energy(handle.result if meter is not None else None))
    content: dict[str, Any] = {
        P.METRICS: MetricRecord({k: float(v) for k, v in metrics.items()}),
        P.META: ConfigRecord(
            {
                "client": name,
                "kind": getattr(handle.result, "kind", "off") if meter is not None else "off",
                "zone": zone_label(str(cfg.energy.carbon)),
            }
        ),
    }
    if out:
        content[P.ARRAYS] = P.from_arrays(out)
    return Message(content=RecordDict(content), reply_to=msg)


def zone_label(spec: str) -> str:
    """The carbon provider as the server may see it: its kind and zone, never a local path
    (``trace:/srv/data/em@US-MIDA-PJM`` -> ``trace@US-MIDA-PJM``)."""
    parts = []
    for part in spec.split("|"):
        kind, _, rest = part.partition(":")
        if kind == "trace":
            zone = rest.rpartition("@")[2] if "@" in rest else ""
            parts.append(f"trace@{zone}" if zone else "trace")
        else:
            parts.append(part)
    return "|".join(parts)


def _config(msg: Any, node: dict[str, Any]) -> RunConfig:
    import yaml

    raw = yaml.safe_load(str(msg.content[P.CONFIG]["run-config"])) or {}
    raw.pop("schema_version", None)
    if node.get("data-path"):
        raw.setdefault("data", {})["path"] = str(node["data-path"])
    # the client makes the private choices itself rather than trust the server's config
    return federation_config(build_config(raw))


def _name(cfg: RunConfig, node: dict[str, Any]) -> str:
    """This client's name: node config ``partition`` (a name or an index), else Flower's
    simulation ``partition-id`` (an index into the partitions' names)."""
    given = node.get("partition", node.get("partition-id"))
    if given is None:
        raise ConfigError(
            "this client has no partition: start it with --node-config 'partition=NAME'"
        )
    text = str(given)
    if node.get("data-path") and not text.lstrip("-").isdigit():
        return text  # a deployed client named by its partition, reading its own file
    names = client_names(cfg)
    if text in names:
        return text
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
        return names[int(text)]
    raise ConfigError(
        f"partition {text!r} is not a client of {cfg.data.path}: "
        f"{', '.join(names)} (or 0..{len(names) - 1})"
    )


def _meter(cfg: RunConfig) -> tuple[Any, Callable[[str], Any]]:
    if not cfg.energy.enabled:
        return None, lambda name: nullcontext()
    from greentune.energy import build_meter

    meter, _ = build_meter(cfg.energy, "federate-client")
    return meter, meter.window


def _energy(result: Any) -> dict[str, float]:
    if result is None:
        return {k: 0.0 for k in P.ENERGY_KEYS} | {"emissions_g": -1.0}
    grams = result.emissions_g
    return {
        "energy_j": result.total_j,
        "duration_s": result.duration_s,
        "emissions_g": -1.0 if grams is None else grams,
        "intensity_g_per_kwh": result.intensity_g_per_kwh or 0.0,
    }


# ---------------------------------------------------------------------------- the work


def _fitted_here(local: Local) -> None:
    """Refuse a query for sums or residuals of this client's rows unless its own config starts
    the skip path at a ridge (never under ``privacy.dp``, whatever the server asks)."""
    if not ridge_start(local.cfg):
        raise ConfigError(
            f"client {local.name}: its config starts the skip path at {skip_start(local.cfg)}, "
            "so it sends "
            "no ridge sums or residual offsets of its rows (under privacy.dp they would fall "
            "outside DP-SGD's guarantee)"
        )


def _ridge(local: Local, call: Call) -> tuple[dict, dict]:
    _fitted_here(local)
    stats = ridge_statistics(local.data)
    return stats, {P.WEIGHT: float(stats["n"][0])}


def _train_or_sums(local: Local, call: Call) -> tuple[dict, dict]:
    """A train message: a training round, or under secure aggregation the ridge's sums or the
    row-weighted offsets (SecAgg+ masks train messages only), split for an exact secure sum,
    each client weighing 1."""
    query = call.config.get(P.SECURE_QUERY)
    if query == P.RIDGE:
        _fitted_here(local)
        return split_sums(ridge_statistics(local.data)), {P.WEIGHT: 1.0}
    if query == P.OFFSETS:
        arrays, metrics = _offsets(local, call)
        rows = metrics[P.WEIGHT]
        weighted, total = P.OFFSET_KEYS
        sums = {weighted: arrays["offsets"] * rows, total: np.asarray([rows])}
        return split_sums(sums), {P.WEIGHT: 1.0}
    return _train(local, call)


def _offsets(local: Local, call: Call) -> tuple[dict, dict]:
    _fitted_here(local)
    fit = skip_from_arrays({**call.arrays, "offsets": np.zeros(1)}).fit
    offsets = residual_offsets(local, fit)
    return {"offsets": offsets}, {P.WEIGHT: float(len(local.data.train))}


PERSONAL = "personal"
"""The node state's record of this client's own skip start (``federated.personal_skip``)."""


def _init(local: Local, call: Call) -> tuple[dict, dict]:
    if call.arrays:
        call.state[P.ARRAYS] = P.from_arrays(call.arrays)  # the skip fit, kept on this node
        if local.cfg.federated.personal_skip:
            skip, blend = personal_skip(local, skip_from_arrays(call.arrays))
            mine = {**skip_to_arrays(skip), "blend": np.asarray([blend])}
            call.state[PERSONAL] = P.from_arrays(mine)
    model = _network(local, call)
    start = trainable_arrays(model, local.cfg.federated.float16)
    call.state["start"] = P.from_arrays(start)  # the local-only reference starts here too
    data = local.data
    patch = local.cfg.model.patch_len or default_patch_len(data.step, data.context_length)
    shape = dict(zip(P.SHAPE_KEYS, (data.context_length, data.horizon, patch), strict=True))
    return start, {
        P.WEIGHT: 1.0,
        "total_parameters": float(count_parameters(model)[1]),
        **{k: float(v) for k, v in shape.items()},
    }


def _network(local: Local, call: Call) -> Any:
    """The client's network with the run's skip start: the federated ridge (kept in the node
    state since ``init``) or, under ``federated.personal_skip``, its blend with the client's
    own; the seasonal naive (fitted on nothing); another run's (``model.skip_from``, read
    by each client), or none."""
    m = local.cfg.model
    if not m.linear_skip or m.skip_init == "random":
        return network(local, None, "none")
    if m.skip_init == "seasonal":
        if local.model is not None and local.skip_id == "seasonal":
            return local.model  # built before: the period was chosen then
        lines: list[str] = []
        saved = _client_file(call, local.name, "seasonal-skip", "json")
        dp_file = _client_file(call, local.name, "privacy-accountant", "pkl")
        trained = dp_file is not None and dp_file.is_file()  # a round trained from it
        skip = seasonal_skip(local.data, max(1, len(m.quantiles)), lines.append, saved, trained)
        local.notes[:] = lines  # which period, in the client's own run directory
        return network(local, skip, "seasonal")
    if m.skip_init == "transfer":  # each client reads the public start itself: nothing sent
        if local.model is not None and local.skip_id == "transfer":
            return local.model
        lines = []
        saved = _client_file(call, local.name, "transfer-skip", "npz")
        skip = transfer_skip(local.cfg, local.data, lines.append, saved)
        local.notes[:] = lines
        return network(local, skip, "transfer")
    state = call.state
    if P.ARRAYS not in state.array_records:
        raise ConfigError(
            "this client has not received the federated skip fit (it joined after the start): "
            "the server sends it before its next round"
        )
    mine = PERSONAL in state.array_records
    skip_arrays = P.to_arrays(state[PERSONAL if mine else P.ARRAYS])
    skip_id = hashlib.sha256(skip_arrays["weight"].tobytes()).hexdigest()[:16]
    return network(local, skip_from_arrays(skip_arrays), skip_id)


def _train(local: Local, call: Call) -> tuple[dict, dict]:
    _network(local, call)
    server_round = int(call.config["server-round"])
    callbacks: list[Callback] = []
    mu = float(call.config.get("proximal-mu", 0.0))
    dp = _dp(local, call)
    if dp is not None and dp.restored.get("stopped_by_budget"):
        # the budget is spent: not one more private step; the global weights go back as
        # they came, with the least weight
        spent = _dp_summary(call.state, call, local.name) or {}
        return dict(call.arrays), {
            P.WEIGHT: 1.0,
            "train_loss": float("nan"),
            "epsilon": float(spent.get("epsilon", float("nan"))),
        }
    if dp is not None:
        callbacks.append(dp)
    if mu > 0:
        callbacks.append(Proximal(mu))
    seed = local.cfg.seed + 1000 * server_round + _index(local.name)
    trained, loss, samples = local_round(local, call.arrays, seed, callbacks)
    # central DP averages the clipped updates with equal weights (its sensitivity analysis)
    weight = 1.0 if local.cfg.federated.central_noise_multiplier is not None else samples
    metrics = {P.WEIGHT: float(max(weight, 1)), "train_loss": loss}
    if dp is not None:
        _keep_dp(dp, call, local.name)
        metrics["epsilon"] = float(dp.summary()["epsilon"])
    return trained, metrics


def _evaluate(local: Local, call: Call) -> tuple[dict, dict]:
    _network(local, call)
    loss = validation_loss(local, call.arrays)
    return {}, {P.WEIGHT: float(len(local.data.val)), "val_loss": loss}


def _test(local: Local, call: Call) -> tuple[dict, dict]:
    model = _network(local, call)
    start = P.to_arrays(call.state["start"])
    workdir = call.node.get("workdir") or None
    metrics = client_test(
        local, call.arrays, model, start, _dp_summary(call.state, call, local.name), workdir
    )
    if PERSONAL in call.state.array_records:
        metrics[P.OWN_WEIGHT] = float(P.to_arrays(call.state[PERSONAL])["blend"][0])
    return {}, metrics


# ---------------------------------------------------------------------------- privacy


def _dp(local: Local, call: Call) -> Any:
    """Opacus DP-SGD for this client's round, its accountant carried over from the last
    round: from the node state, else from the client's workdir, where every round also keeps
    it (a restarted client, a resumed run: epsilon never restarts at 0)."""
    dp_cfg = local.cfg.privacy.dp
    if not dp_cfg.enabled:
        return None
    from greentune.privacy.dp import DPTraining

    fed = local.cfg.federated
    planned = fed.rounds * fed.local_steps
    dp = DPTraining(
        dp_cfg,
        local.cfg.train,
        local.cfg.seed + _index(local.name),
        lambda message: None,
        None,
        planned,
    )
    kept = _kept_dp(call, local.name)
    if kept is not None:
        dp.load_state_dict(pickle.loads(kept["state"]))
    return dp


def _dp_file(call: Call, name: str) -> Path | None:
    """Where the client ``name`` keeps its accountant for this run."""
    return _client_file(call, name, "privacy-accountant", "pkl")


def _client_file(call: Call, name: str, stem: str, suffix: str) -> Path | None:
    """A file the client ``name`` keeps for this run in its workdir (which a simulation's
    clients may share), for a restarted client or a resumed run; None without a workdir."""
    workdir = call.node.get("workdir")
    if not workdir:
        return None
    key = hashlib.sha256(str(call.config["run-config"]).encode()).hexdigest()[:16]
    return Path(str(workdir)) / name / f".{stem}-{key}.{suffix}"


def _kept_dp(call: Call, name: str) -> dict[str, Any] | None:
    if "dp" in call.state.config_records:
        record = call.state["dp"]
        return {"state": bytes(record["state"]), "summary": str(record["summary"])}
    path = _dp_file(call, name)
    if path is not None and path.is_file():
        return dict(pickle.loads(path.read_bytes()))
    return None


def _keep_dp(dp: Any, call: Call, name: str) -> None:
    """The accountant in the node state and, for a restart, in the client's workdir."""
    from flwr.app import ConfigRecord

    kept: dict[str, Any] = {
        "state": pickle.dumps(dp.state_dict()),
        "summary": json.dumps({k: v for k, v in dp.summary().items() if k != "frozen"}),
    }
    call.state["dp"] = ConfigRecord(kept)
    path = _dp_file(call, name)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(pickle.dumps(kept))
        tmp.replace(path)


def _dp_summary(state: Any, call: Call, name: str) -> dict[str, Any] | None:
    if "dp" in state.config_records:
        return dict(json.loads(str(state["dp"]["summary"])))
    kept = _kept_dp(call, name)
    return dict(json.loads(kept["summary"])) if kept else None


def _index(name: str) -> int:
    """A stable small number per client name, for seeds (Python's hash() is salted)."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:6], 16) % 997
