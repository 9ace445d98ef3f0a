"""The server's side of a federated run: rounds through Flower's strategies, driven by hand.

    1. ridge    the skip path's ridge from the clients' summed sufficient statistics
    2. offsets  each quantile's start offset: the clients' residual quantiles, weighted
    3. init     the skip fit goes out once (clients keep it); the start weights come back
    4. rounds   train (Flower's FedAvg / FedProx / FedAdam aggregate) then evaluate on the
                clients' validation windows; the best round's weights are kept; the global
                weights are checkpointed after every round
    5. test     the chosen weights go out; each client scores them, its local-only reference
                and the seasonal naives on its own test windows and keeps its own run directory

The server never opens a data file: it sees parameter arrays, sums over windows and named
metrics. Its ``Grid`` is Flower's (simulation engine or SuperLink), so the same code runs in
both. Rounds go on without clients that fail or time out (``federated.round_timeout_s``), as
long as ``federated.min_clients`` answer.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from greentune.config import FederatedConfig, RunConfig, dump_yaml
from greentune.errors import GreentuneError
from greentune.privacy.federated import protocol as P

Log = Callable[[str], None]
CHECKPOINT = "federated-state.npz"


class FederationError(GreentuneError):
    """Too few clients answered, or they disagree on the network."""


@dataclass
class Reply:
    """One client's answer to one message, as the ledger and metrics.json see it."""

    client: str
    node: int
    metrics: dict[str, float]
    arrays: dict[str, np.ndarray]
    kind: str
    zone: str
    bytes_sent: int
    bytes_received: int
    message: Any = None
    """Flower's reply, for the strategy's aggregation."""


@dataclass
class History:
    """What the server learned round by round (checkpointed, written to metrics.json)."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    best_round: int = 0
    best_val_loss: float = float("inf")
    clients: dict[int, str] = field(default_factory=dict)


def build_strategy(fed: FederatedConfig, n_clients: int) -> Any:
    """Flower's strategy for ``federated.strategy``; min nodes from ``federated.min_clients``."""
    from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx

    least = min(fed.min_clients or n_clients, n_clients)
    sampled = max(1, math.ceil(n_clients * fed.fraction))
    common: dict[str, Any] = {
        "fraction_train": fed.fraction,
        "fraction_evaluate": 1.0,
        "min_train_nodes": min(least, sampled),
        "min_evaluate_nodes": least,
        "min_available_nodes": least,
        "weighted_by_key": P.WEIGHT,
    }
    strategy: Any
    if fed.strategy == "fedprox":
        strategy = FedProx(**common, proximal_mu=fed.proximal_mu)
    elif fed.strategy == "fedadam":
        strategy = FedAdam(**common, eta=fed.server_lr, eta_l=fed.server_lr)
    else:
        strategy = FedAvg(**common)
    if fed.central_noise_multiplier is None:
        return strategy
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

    return DifferentialPrivacyServerSideFixedClipping(
        strategy, fed.central_noise_multiplier, fed.central_clipping_norm, sampled
    )


class Server:
    """One federated run's server: holds the grid, the history and the ledger rows."""

    def __init__(self, grid: Any, cfg: RunConfig, run_path: Path, n_clients: int, log: Log):
        self.grid, self.cfg, self.path, self.n, self.log = grid, cfg, run_path, n_clients, log
        self.fed = cfg.federated
        self.history = History()
        self.rows: list[dict[str, Any]] = []
        self.yaml = dump_yaml(cfg)
        self.full_parameters = 0
        """The whole network's parameter count (the clients say it at init)."""
        self.rows_written = False
        self.skip: dict[str, np.ndarray] = {}
        self.initialised: set[int] = set()
        """Nodes that got the skip fit (a client that rejoins gets it before it trains)."""
        self.shape: dict[str, int] = {}
        """The window shape the clients resolved from their data (``protocol.SHAPE_KEYS``)."""

    # ------------------------------------------------------------------ messaging

    def nodes(self) -> list[int]:
        """Wait (up to the round timeout) until every expected client is connected."""
        deadline = time.monotonic() + self.fed.round_timeout_s
        least = self.fed.min_clients or self.n
        while True:
            ids = sorted(self.grid.get_node_ids())
            if len(ids) >= self.n or (time.monotonic() > deadline and len(ids) >= least):
                return ids
            if time.monotonic() > deadline:
                raise FederationError(
                    f"{len(ids)} of {self.n} clients connected within "
                    f"{self.fed.round_timeout_s:g} s (federated.round_timeout_s); need {least}"
                )
            time.sleep(0.5)

    def wait_for(self, least: int, what: str) -> None:
        """Flower's node sampling waits for ever: fail after the round timeout instead."""
        deadline = time.monotonic() + self.fed.round_timeout_s
        while len(list(self.grid.get_node_ids())) < least:
            if time.monotonic() > deadline:
                raise FederationError(
                    f"{what}: fewer than {least} clients connected for "
                    f"{self.fed.round_timeout_s:g} s (federated.round_timeout_s)"
                )
            time.sleep(0.5)

    def config(self, server_round: int, **extra: Any) -> Any:
        from flwr.app import ConfigRecord

        return ConfigRecord({"run-config": self.yaml, "server-round": server_round, **extra})

    def send(
        self,
        messages: Iterable[Any],
        what: str,
        server_round: int,
        quorum: int | None = None,
        timeout_s: float | None = None,
    ) -> list[Reply]:
        """Send, wait for the replies (``timeout_s``, default the round timeout), keep the good
        ones as ``Reply``s and a ledger row each; fail when fewer than ``quorum`` (default
        min_clients) answered."""
        messages = list(messages)
        sent = {m.metadata.dst_node_id: _bytes(m.content) for m in messages}
        timeout = timeout_s or self.fed.round_timeout_s
        raw = list(self.grid.send_and_receive(messages, timeout=timeout))
        replies: list[Reply] = []
        failures: list[str] = []
        for msg in raw:
            node = msg.metadata.src_node_id
            if msg.has_error():
                failures.append(f"node {node}: {msg.error.reason}")
                self.log(f"round {server_round} {what}: {failures[-1]}")
                continue
            replies.append(self.keep(msg, sent.get(node, 0), what, server_round))
        least = self.quorum(len(messages)) if quorum is None else quorum
        if len(replies) < least:
            raise FederationError(
                f"round {server_round} {what}: {len(replies)} of {len(messages)} clients answered "
                f"within {timeout:g} s; federated.min_clients={least}"
                + (f" ({'; '.join(failures[:3])})" if failures else "")
            )
        # replies arrive in completion order; the aggregate's float sums must not depend on it
        replies.sort(key=lambda r: (r.client, r.node))
        missing = len(messages) - len(replies)
        if missing:
            self.log(f"round {server_round} {what}: went on without {missing} client(s)")
        return replies

    def quorum(self, sent: int) -> int:
        """How many of ``sent`` messages must be answered: federated.min_clients (default:
        all clients), at most the messages sent."""
        return min(self.fed.min_clients or self.n, sent)

    def keep(
        self, msg: Any, sent: int, what: str, server_round: int, received: int | None = None
    ) -> Reply:
        """A good reply as a ``Reply``, with its ledger row; ``received`` overrides the bytes
        counted from its array records (SecAgg+ replies carry their vectors elsewhere)."""
        reply = _reply(msg, sent)
        if received is not None:
            reply.bytes_received = received
        self.history.clients[reply.node] = reply.client
        self._row(reply, what, server_round)
        return reply

    def to_all(
        self,
        kind: str,
        arrays: dict[str, np.ndarray] | None,
        server_round: int,
        node_ids: list[int],
        **extra: Any,
    ) -> list[Any]:
        from flwr.app import Message, RecordDict

        content: dict[str, Any] = {P.CONFIG: self.config(server_round, **extra)}
        if arrays is not None:
            content[P.ARRAYS] = P.from_arrays(arrays)
        return [
            Message(content=RecordDict(content), message_type=kind, dst_node_id=node)
            for node in node_ids
        ]

    def _row(self, reply: Reply, what: str, server_round: int) -> None:
        m = reply.metrics
        now = dt.datetime.now(dt.UTC)
        grams = m.get("emissions_g", -1.0)
        self.rows.append(
            {
                "window": f"client-{reply.client}/round-{server_round}/{what}",
                "phase": f"client-{reply.client}",
                "parent": None,
                "depth": 0,
                "command": "federate",
                "rank": 0,
                # the reply's arrival on the server's clock, back by the client's own duration
                "start": (now - dt.timedelta(seconds=float(m.get("duration_s", 0.0)))).isoformat(),
                "end": now.isoformat(),
                "duration_s": float(m.get("duration_s", 0.0)),
                "energy_j": {"client": float(m.get("energy_j", 0.0))},
                "sources": {"client": f"client {reply.client} ({reply.kind})"},
                "kind": reply.kind,
                "intensity_g_per_kwh": m.get("intensity_g_per_kwh"),
                "emissions_g": None if grams < 0 else float(grams),
                "pue": 1.0,
                "ok": True,
                "extra": {
                    "client": reply.client,
                    "round": server_round,
                    "message": what,
                    "zone": reply.zone,
                    "bytes_sent": reply.bytes_sent,
                    "bytes_received": reply.bytes_received,
                },
            }
        )


def _bytes(content: Any) -> int:
    return sum(rec.count_bytes() for rec in content.array_records.values())


def _reply(msg: Any, sent: int) -> Reply:
    content = msg.content
    meta = dict(content.config_records.get(P.META, {}))
    metrics = {k: float(v) for k, v in content.metric_records.get(P.METRICS, {}).items()}
    arrays = P.to_arrays(content[P.ARRAYS]) if P.ARRAYS in content.array_records else {}
    return Reply(
        client=str(meta.get("client", msg.metadata.src_node_id)),
        node=msg.metadata.src_node_id,
        metrics=metrics,
        arrays=arrays,
        kind=str(meta.get("kind", "model")),
        zone=str(meta.get("zone", "")),
        bytes_sent=sent,
        bytes_received=_bytes(content),
        message=msg,
    )


def weighted(replies: list[Reply], key: str) -> float:
    total = sum(r.metrics[P.WEIGHT] for r in replies)
    return sum(r.metrics[key] * r.metrics[P.WEIGHT] for r in replies) / max(total, 1e-12)


def save_state(
    path: Path,
    arrays: dict[str, np.ndarray],
    best: dict[str, np.ndarray],
    history: History,
    strategy: Any,
) -> None:
    """The global and best weights, the history and the server optimizer's moments, written
    atomically after every round (a restarted server resumes from here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    moments = {}
    for attr in ("m_t", "v_t"):
        for name, value in (getattr(strategy, attr, None) or {}).items():
            moments[f"{attr}/{name}"] = np.asarray(value)
    payload: dict[str, Any] = {
        **{f"global/{k}": v for k, v in arrays.items()},
        **{f"best/{k}": v for k, v in best.items()},
        **moments,
        "history": np.asarray(json.dumps(_history_json(history))),
    }
    np.savez(tmp, **payload)
    tmp.replace(path)


def load_state(
    path: Path,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], History, dict[str, dict[str, np.ndarray]]]:
    with np.load(path) as z:
        groups: dict[str, dict[str, np.ndarray]] = {"global": {}, "best": {}, "m_t": {}, "v_t": {}}
        for key in z.files:
            if "/" in key:
                group, name = key.split("/", 1)
                groups[group][name] = z[key]
        raw = json.loads(str(z["history"]))
    history = History(
        rounds=raw["rounds"],
        best_round=raw["best_round"],
        best_val_loss=raw["best_val_loss"],
        clients={int(k): v for k, v in raw["clients"].items()},
    )
    moments = {"m_t": groups["m_t"], "v_t": groups["v_t"]}
    return groups["global"], groups["best"], history, moments


def _history_json(history: History) -> dict[str, Any]:
    return {
        "rounds": history.rounds,
        "best_round": history.best_round,
        "best_val_loss": history.best_val_loss,
        "clients": {str(k): v for k, v in history.clients.items()},
    }
