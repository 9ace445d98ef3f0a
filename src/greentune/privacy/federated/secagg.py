"""Secure aggregation of the training rounds with Flower's SecAgg+.

The server learns the sampled clients' weighted mean update and nothing about one client's:
each client quantizes its update, adds a private mask and pairwise masks agreed with its
neighbours, and the masks cancel (or are rebuilt from secret shares when a client drops out)
only in the sum.

Flower 1.42 ships SecAgg+ for its legacy workflow only: ``SecAggPlusWorkflow`` runs on a
``LegacyContext`` with a legacy strategy, and ``secaggplus_mod`` reads the ``fitres.*`` records
of a legacy fit result. greentune drives the workflow's four stages itself (setup, share keys,
collect masked vectors, unmask), with stand-ins for the legacy strategy and client manager,
and feeds the unmasked mean to its own Flower strategy, so FedAvg, FedProx and FedAdam work
unchanged. On the client two small mods sit around ``secaggplus_mod``: ``secure_gate`` (only
messages that carry SecAgg+'s configs go through it) and ``as_fit_result`` (greentune's reply
as the update, its arrays minus the global, in the records the mod reads).

What stays visible to the server: each client's named metrics (its sample count, training
loss and energy) and the ridge's sums before the rounds (docs/federate.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from greentune.privacy.federated import protocol as P

CONFIGS = "secaggplus_configs"
"""The ConfigRecord SecAgg+'s stage messages carry (flwr's ``RECORD_KEY_CONFIGS``)."""
STATE = "secaggplus_state"
"""Where ``secaggplus_mod`` keeps its state in the node's context (``RECORD_KEY_STATE``)."""
MAX_WEIGHT = 1000.0
"""Flower's default max weight: a client's update is multiplied by samples / MAX_WEIGHT."""


# ---------------------------------------------------------------------------- client side


def secure_gate(msg: Any, context: Any, call_next: Any) -> Any:
    """Flower's ``secaggplus_mod`` for SecAgg+'s stage messages; plain rounds pass by."""
    if CONFIGS not in msg.content.config_records:
        return call_next(msg, context)
    from flwr.client.mod import secaggplus_mod

    return secaggplus_mod(msg, context, call_next)


def as_fit_result(msg: Any, context: Any, call_next: Any) -> Any:
    """Under SecAgg+, the reply's arrays become the update (arrays minus the global sent, in
    float32, sorted by name) in the ``fitres.*`` records ``secaggplus_mod`` masks; the metrics
    and meta stay as they are."""
    out = call_next(msg, context)
    if CONFIGS not in msg.content.config_records or out.has_error():
        return out
    from flwr.app import ConfigRecord, MetricRecord

    sent = P.to_arrays(msg.content[P.ARRAYS])
    got = P.to_arrays(out.content[P.ARRAYS])
    update = {k: got[k].astype(np.float32) - sent[k].astype(np.float32) for k in sorted(got)}
    weight = float(out.content[P.METRICS][P.WEIGHT])
    state = context.state.config_records[STATE]
    clip = float(state["clipping_range"])
    peak = max(float(np.abs(v).max(initial=0.0)) for v in update.values())
    scaled = peak * weight / float(state["max_weight"])
    if scaled > clip:
        raise ValueError(
            f"this client's weighted update reaches {scaled:.3g}, beyond "
            f"federated.secagg_clip={clip:g}: raise it (or lower train.lr / local_steps)"
        )
    content = out.content
    del content[P.ARRAYS]
    content["fitres.parameters"] = P.from_arrays(update)
    content["fitres.num_examples"] = MetricRecord({"num_examples": round(weight)})
    content["fitres.metrics"] = ConfigRecord({})
    content["fitres.status"] = ConfigRecord({"code": 0, "message": ""})
    return out


# ---------------------------------------------------------------------------- server side


@dataclass
class _Sampled:
    """The legacy strategy SecAgg+'s setup and unmask stages call: the nodes greentune's own
    strategy sampled, and the unmasked mean kept when the workflow hands it over."""

    nodes: list[int]
    mean: list[np.ndarray] = field(default_factory=list)

    def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> list:
        from flwr.common import FitIns

        return [(SimpleNamespace(node_id=n), FitIns(parameters, {})) for n in self.nodes]

    def aggregate_fit(self, server_round: int, results: list, failures: list) -> tuple:
        from flwr.common import parameters_to_ndarrays

        if not results:
            return None, {}
        self.mean = parameters_to_ndarrays(results[0][1].parameters)
        return results[0][1].parameters, {}


@dataclass
class _Clients:
    """The legacy client manager, asked only how many clients there are."""

    n: int

    def num_available(self) -> int:
        return self.n


class _CountedGrid:
    """The server's grid, counting each node's bytes both ways over the four stages (their
    whole content as serialized: the masked vectors travel in config records) and keeping
    the replies that carry a client's metrics (the collect stage's)."""

    def __init__(self, grid: Any) -> None:
        self.grid = grid
        self.sent: dict[int, int] = {}
        self.received: dict[int, int] = {}
        self.results: list[Any] = []
        self.errors: list[str] = []

    def get_node_ids(self) -> Any:
        return self.grid.get_node_ids()

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Any]:
        messages = list(messages)
        for m in messages:
            node = m.metadata.dst_node_id
            self.sent[node] = self.sent.get(node, 0) + _all_bytes(m.content)
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        for r in replies:
            if r.has_error():
                self.errors.append(f"node {r.metadata.src_node_id}: {r.error.reason}")
                continue
            node = r.metadata.src_node_id
            self.received[node] = self.received.get(node, 0) + _all_bytes(r.content)
            if P.METRICS in r.content.metric_records:
                self.results.append(r)
        return replies


def _all_bytes(content: Any) -> int:
    """The content's size in Flower's wire format (protobuf)."""
    from flwr.common.serde import recorddict_to_proto

    return int(recorddict_to_proto(content).ByteSize())


@dataclass
class SecureRound:
    """What one secure round gave: the global arrays plus the clients' weighted mean update,
    and the collect stage's replies with each node's bytes over all four stages."""

    arrays: dict[str, np.ndarray]
    replies: list[Any]
    sent: dict[int, int]
    received: dict[int, int]


def secure_round(
    grid: Any, messages: list[Any], arrays: dict[str, np.ndarray], fed: Any, server_round: int
) -> SecureRound:
    """Run SecAgg+'s four stages on the train ``messages`` greentune's strategy configured;
    raises ``FederationError`` when the protocol cannot finish (too few clients or shares)."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState

    from greentune.privacy.federated.server import FederationError

    nodes = [m.metadata.dst_node_id for m in messages]
    if len(nodes) < 3:
        raise FederationError(
            f"round {server_round}: secure aggregation needs at least 3 sampled clients, got "
            f"{len(nodes)} (with 2 the sum gives each away the other's update)"
        )
    legacy = _Sampled(nodes)
    context = LegacyContext(
        Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        strategy=legacy,  # type: ignore[arg-type]
        client_manager=_Clients(len(nodes)),  # type: ignore[arg-type]
    )
    context.state.config_records["config"] = ConfigRecord({"current_round": server_round})
    context.state.array_records["parameters"] = ArrayRecord()
    workflow = SecAggPlusWorkflow(
        num_shares=1.0,  # every sampled client a neighbour: fine for tens of clients
        reconstruction_threshold=fed.secagg_threshold,
        max_weight=MAX_WEIGHT,
        clipping_range=fed.secagg_clip,
        timeout=fed.round_timeout_s,
    )
    counted = _CountedGrid(grid)
    state = WorkflowState()
    stages = [
        workflow.setup_stage,
        workflow.share_keys_stage,
        workflow.collect_masked_vectors_stage,
        workflow.unmask_stage,
    ]
    for i, stage in enumerate(stages):
        if not stage(counted, context, state):  # type: ignore[arg-type]
            raise FederationError(
                f"round {server_round}: secure aggregation stopped at its "
                f"{['setup', 'share-keys', 'collect', 'unmask'][i]} stage: fewer clients "
                "answered than its reconstruction threshold needs "
                f"(federated.secagg_threshold={fed.secagg_threshold:g}); resume with --resume"
                + (f" ({'; '.join(counted.errors[:3])})" if counted.errors else "")
            )
        if i == 0:  # the collect stage sends greentune's own train message to each client
            state.nid_to_fitins = {
                m.metadata.dst_node_id: RecordDict(dict(m.content)) for m in messages
            }
    if not legacy.mean:
        raise FederationError(f"round {server_round}: no client update to aggregate")
    names = sorted(arrays)
    mean = dict(zip(names, legacy.mean, strict=True))
    merged = {k: (arrays[k].astype(np.float64) + mean[k]).astype(arrays[k].dtype) for k in names}
    return SecureRound(merged, counted.results, counted.sent, counted.received)
