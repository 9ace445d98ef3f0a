"""The federated run from the server's seat: ridge, offsets, init, rounds, test (see server.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from greentune.evaluate.ridge import LAYOUT_KEYS
from greentune.privacy.federated import protocol as P
from greentune.privacy.federated.partitions import ridge_start
from greentune.privacy.federated.ridge import KEYS, add_statistics, solve_pooled
from greentune.privacy.federated.secagg import SecureRound, secure_round, secure_sums
from greentune.privacy.federated.server import (
    CHECKPOINT,
    FederationError,
    History,
    Reply,
    Server,
    build_strategy,
    load_state,
    save_state,
    weighted,
)


@dataclass
class Outcome:
    """What the server ends with."""

    best: dict[str, np.ndarray]
    """The chosen global trainable weights (best pooled validation loss)."""
    skip: dict[str, np.ndarray]
    """The federated skip fit (empty without a ridge skip path)."""
    test: list[Reply]
    """Each client's test scores."""
    rounds_done: int


def drive(server: Server, resume: bool = False) -> Outcome:
    """Run every step; the state is checkpointed after each round in ``checkpoints/``."""
    fed, log = server.fed, server.log
    nodes = server.nodes()
    log(f"federate: {len(nodes)} clients connected")
    skip = _skip(server, nodes)
    replies = server.send(server.to_all(P.INIT, skip or None, 0, nodes), "init", 0)
    server.initialised.update(r.node for r in replies)
    server.skip = skip
    start = replies[0].arrays
    server.full_parameters = int(replies[0].metrics.get("total_parameters", 0))
    server.shape = _common_shape(server, replies)
    if any(set(r.arrays) != set(start) for r in replies):
        raise FederationError("the clients built different networks: give them the same config")
    trainable = sum(a.size for a in start.values())
    log(f"federate: {trainable:,} trainable parameters travel each way per client and round")
    strategy = build_strategy(fed, len(nodes))
    ckpt = Path(server.path) / "checkpoints" / CHECKPOINT
    arrays, best, first = start, dict(start), 1
    if resume and ckpt.is_file():
        arrays, best, server.history, moments = load_state(ckpt)
        for attr, values in moments.items():
            if values and hasattr(strategy, attr):
                setattr(strategy, attr, values)
        first = int(server.history.rounds[-1]["round"]) + 1
        log(f"federate: resumed after round {first - 1} from {ckpt}")
    if first == 1:
        loss = _validate(server, arrays, 0)
        server.history.rounds.append({"round": 0, "val_loss": loss})
        server.history.best_val_loss = loss
    for r in range(first, fed.rounds + 1):
        if _stale(server.history, fed.patience):
            break
        _welcome(server, r)
        arrays = _train_round(server, strategy, arrays, r)
        loss = _validate(server, arrays, r)
        row: dict[str, Any] = {"round": r, "val_loss": loss}
        if loss < server.history.best_val_loss:
            server.history.best_val_loss, server.history.best_round = loss, r
            best = dict(arrays)
        server.history.rounds.append(row)
        save_state(ckpt, arrays, best, server.history, strategy)
        log(
            f"round {r}/{fed.rounds}: validation loss {loss:.5f}"
            + (" (best)" if server.history.best_round == r else "")
        )
    ran = int(server.history.rounds[-1]["round"])
    if ran < fed.rounds:
        log(
            f"federate: stopped after round {ran} of {fed.rounds}: no lower pooled validation "
            f"loss in {fed.patience} round{'s' * (fed.patience != 1)} (federated.patience); the "
            f"best is round "
            f"{server.history.best_round}"
        )
    _welcome(server, fed.rounds + 1)
    nodes = sorted(n for n in server.grid.get_node_ids() if n in server.initialised)
    # the test message trains the local-only reference: all its rounds in one message
    local = "local" in fed.references
    timeout = fed.round_timeout_s * (fed.rounds + 1 if local else 1)
    last = fed.rounds + 1
    test = server.send(server.to_all(P.TEST, best, last, nodes), "test", last, None, timeout)
    if own := {r.client: r.metrics[P.OWN_WEIGHT] for r in test if P.OWN_WEIGHT in r.metrics}:
        words = ", ".join(f"{c} {a:.2f}" for c, a in sorted(own.items()))
        log(f"personal skip paths, the weight of each client's own ridge: {words}")
    return Outcome(best, skip, test, ran)


def _stale(history: History, patience: int | None) -> bool:
    """Whether ``patience`` rounds in a row have passed without a better pooled validation
    loss (read from the history alone, so a resumed run stops where the first would have)."""
    last = int(history.rounds[-1]["round"])
    return patience is not None and last - history.best_round >= patience


def _common_shape(server: Server, replies: list[Reply]) -> dict[str, int]:
    """The window shape every client resolved from its own data (steps): one network needs
    one shape, so clients that differ (hourly and half-hourly data, say) are named."""
    shapes = {
        r.client: {k: int(r.metrics[k]) for k in P.SHAPE_KEYS if k in r.metrics} for r in replies
    }
    if len({tuple(s.items()) for s in shapes.values()}) > 1:
        listed = "; ".join(
            f"{client}: " + ", ".join(f"{k.split('.')[1]} {v}" for k, v in s.items())
            for client, s in shapes.items()
        )
        raise FederationError(
            f"the clients chose different window shapes from their data ({listed}): set "
            "data.context_length, data.horizon and model.patch_len in steps, or give every "
            "client data of the same step"
        )
    shape = next(iter(shapes.values()), {})
    if shape:
        words = ", ".join(f"{k.split('.')[1]} {v}" for k, v in shape.items())
        server.log(f"federate: the clients' window shape in steps: {words} (in config.yaml)")
    return shape


def _welcome(server: Server, r: int) -> None:
    """A client that (re)joined since the start gets the skip fit before it trains: it keeps
    it in its node state, which a restarted client has lost."""
    new = [n for n in sorted(server.grid.get_node_ids()) if n not in server.initialised]
    if not new:
        return
    # no quorum: a newcomer that fails stays uninitialised, and the others go on
    replies = server.send(server.to_all(P.INIT, server.skip or None, r, new), "init", r, 0)
    server.initialised.update(reply.node for reply in replies)
    if replies:
        names = ", ".join(x.client for x in replies)
        server.log(f"round {r}: {len(replies)} client(s) joined: {names}")


def _skip(server: Server, nodes: list[int]) -> dict[str, np.ndarray]:
    """The federated ridge (sums, one round) and the quantile offsets (a second one)."""
    if not ridge_start(server.cfg):
        return {}
    if server.fed.secure_aggregation:
        summed, count = _secure_ridge_sums(server, nodes)
    else:
        replies = server.send(server.to_all(P.RIDGE, None, 0, nodes), "ridge", 0)
        sums = [{k: r.arrays[k] for k in KEYS if k in r.arrays} for r in replies]
        summed, count = add_statistics(sums), len(replies)  # a missing key: a clear error there
    fit = solve_pooled(summed)
    server.log(
        f"skip path: ridge from {count} clients' summed statistics "
        f"({round(float(summed['n'][0])):,} training windows"
        + (", summed under SecAgg+" if server.fed.secure_aggregation else "")
        + f"), alpha {fit.alpha:g}"
    )
    arrays = {
        "weight": fit.weight,
        "x_mean": fit.x_mean,
        "y_mean": fit.y_mean,
        "alpha": np.asarray([fit.alpha]),
    }
    if server.fed.secure_aggregation:
        arrays["offsets"] = _secure_offsets(server, arrays, nodes)
        return arrays
    replies = server.send(server.to_all(P.OFFSETS, arrays, 0, nodes), "offsets", 0)
    total = sum(r.metrics[P.WEIGHT] for r in replies)
    arrays["offsets"] = (
        np.sum([r.arrays["offsets"] * r.metrics[P.WEIGHT] for r in replies], 0) / total
    )
    return arrays


def _secure_offsets(server: Server, fit: dict[str, np.ndarray], nodes: list[int]) -> np.ndarray:
    """The clients' residual quantiles weighted by their training rows, as the plain round
    weighs them, from two secure sums (quantiles times rows, and rows): no client's own."""
    messages = server.to_all(P.TRAIN, fit, 0, nodes, **{P.SECURE_QUERY: P.OFFSETS})
    summed, done = secure_sums(server.grid, messages, P.OFFSET_KEYS, server.fed, 0)
    _keep_secure(server, done, len(messages), "offsets", 0)
    return summed["weighted_offsets"] / summed["rows"][0]


def _secure_ridge_sums(server: Server, nodes: list[int]) -> tuple[dict[str, np.ndarray], int]:
    """The ridge's sums through SecAgg+: the server learns the total, never one client's."""
    messages = server.to_all(P.TRAIN, None, 0, nodes, **{P.SECURE_QUERY: P.RIDGE})
    summed, done = secure_sums(server.grid, messages, KEYS, server.fed, 0)
    n = _keep_secure(server, done, len(messages), "ridge", 0)
    for key in LAYOUT_KEYS:  # the same 0/1 layout on every client sums to n times it
        layout = summed[key] / n
        if not np.allclose(layout, np.round(layout), atol=1e-6):
            raise FederationError(
                "the clients' ridge statistics have different layouts (every client needs the "
                "same columns, context_length and horizon)"
            )
        summed[key] = np.round(layout)
    return summed, n


def _train_round(
    server: Server, strategy: Any, arrays: dict[str, np.ndarray], r: int
) -> dict[str, np.ndarray]:
    from flwr.app import Message, RecordDict

    record = P.from_arrays(arrays)
    config = server.config(r)
    inner = getattr(strategy, "strategy", strategy)  # under Flower's DP wrapper
    server.wait_for(inner.min_available_nodes, f"round {r}")
    messages = list(strategy.configure_train(r, record, config, server.grid))
    # the strategy's messages share one RecordDict: each gets its own copy to travel
    messages = [
        Message(
            content=RecordDict(dict(m.content)),
            message_type=P.TRAIN,
            dst_node_id=m.metadata.dst_node_id,
        )
        for m in messages
    ]
    if server.fed.secure_aggregation:
        return _secure_train_round(server, strategy, arrays, messages, r)
    replies = server.send(messages, "train", r)
    if server.fed.central_noise_multiplier is not None and len(replies) < len(messages):
        # the noise is sized for the sampled clients: an average over fewer would be
        # under-noised, and the epsilon reported wrong
        raise FederationError(
            f"round {r}: {len(messages) - len(replies)} client(s) did not answer; central DP "
            "needs every sampled client's update (resume the run with --resume)"
        )
    agg, _ = strategy.aggregate_train(r, [reply.message for reply in replies])
    if agg is None:
        raise FederationError(f"round {r}: no client update to aggregate")
    out = P.to_arrays(agg)
    dtype = next(iter(arrays.values())).dtype
    return {k: v.astype(dtype) for k, v in out.items()}


def _keep_secure(server: Server, done: SecureRound, sent: int, what: str, r: int) -> int:
    """A secure round's replies as ledger rows, each failed client's reason in the log (as
    ``Server.send`` does), the quorum checked; returns how many clients took part."""
    for msg in done.replies:
        node = msg.metadata.src_node_id
        server.keep(msg, done.sent.get(node, 0), what, r, done.received.get(node, 0))
    for error in done.errors:
        server.log(f"round {r} {what}: {error}")
    n, least = len(done.replies), server.quorum(sent)
    if n < least:
        raise FederationError(
            f"round {r} {what}: {n} of {sent} clients answered; federated.min_clients={least}"
            + (f" ({'; '.join(done.errors[:3])})" if done.errors else "")
        )
    if n < sent:
        server.log(f"round {r} {what}: went on without {sent - n} client(s)")
    return n


def _secure_train_round(
    server: Server, strategy: Any, arrays: dict[str, np.ndarray], messages: list[Any], r: int
) -> dict[str, np.ndarray]:
    """The round through SecAgg+: the strategy aggregates the unmasked mean as one reply (so
    FedAdam's server step and FedProx work unchanged)."""
    from flwr.app import Message, MetricRecord, RecordDict

    done = secure_round(server.grid, messages, arrays, server.fed, r)
    _keep_secure(server, done, len(messages), "train", r)
    mean = Message(
        content=RecordDict(
            {P.ARRAYS: P.from_arrays(done.arrays), P.METRICS: MetricRecord({P.WEIGHT: 1.0})}
        ),
        message_type=P.TRAIN,
        dst_node_id=0,
    )
    agg, _ = strategy.aggregate_train(r, [mean])
    if agg is None:
        raise FederationError(f"round {r}: no client update to aggregate")
    out = P.to_arrays(agg)
    return {k: v.astype(arrays[k].dtype) for k, v in out.items()}


def _validate(server: Server, arrays: dict[str, np.ndarray], r: int) -> float:
    _welcome(server, r)
    nodes = sorted(n for n in server.grid.get_node_ids() if n in server.initialised)
    replies = server.send(server.to_all(P.EVALUATE, arrays, r, nodes), "evaluate", r)
    loss = weighted(replies, "val_loss")
    if not math.isfinite(loss):
        raise FederationError(f"round {r}: the validation loss is {loss}")
    return loss
