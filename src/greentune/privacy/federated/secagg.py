"""Secure aggregation of the ridge's sums and the training rounds with Flower's SecAgg+.

The server learns the sampled clients' weighted mean update (``secure_round``) or their total
(``secure_sums``) and nothing about one client's:
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
loss and energy; docs/federate.md). The skip path's offsets (residual quantiles weighted by
training rows) are a secure sum too.
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
    """Under SecAgg+, the reply's arrays become the vector to mask (a training round's update:
    its arrays minus the global sent; secure sums: the arrays as they are), sorted by name, in
    the ``fitres.*`` records ``secaggplus_mod`` masks; the metrics and meta stay as they are."""
    out = call_next(msg, context)
    if CONFIGS not in msg.content.config_records or out.has_error():
        return out
    from flwr.app import ConfigRecord, MetricRecord

    sent = P.to_arrays(msg.content[P.ARRAYS]) if P.ARRAYS in msg.content.array_records else {}
    got = P.to_arrays(out.content[P.ARRAYS])
    # float64: secure sums need every digit (a training update would do with float32)
    update = {
        k: got[k].astype(np.float64) - (sent[k].astype(np.float64) if k in sent else 0.0)
        for k in sorted(got)
    }
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
    """The server's grid, counting each node's bytes both ways over the four stages (the
    arrays and SecAgg+'s record: the masked vectors travel in a config record) and keeping
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
            self.sent[node] = self.sent.get(node, 0) + _secagg_bytes(m.content)
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        for r in replies:
            if r.has_error():
                self.errors.append(f"node {r.metadata.src_node_id}: {r.error.reason}")
                continue
            node = r.metadata.src_node_id
            self.received[node] = self.received.get(node, 0) + _secagg_bytes(r.content)
            if P.METRICS in r.content.metric_records:
                self.results.append(r)
        return replies


def _secagg_bytes(content: Any) -> int:
    """What the plain path counts (the array records) plus SecAgg+'s own record (keys, shares,
    masked vectors), the latter as serialized (protobuf): config records hold lists Flower's
    ``count_bytes`` does not take."""
    from flwr.app import RecordDict
    from flwr.common.serde import recorddict_to_proto

    arrays = sum(rec.count_bytes() for rec in content.array_records.values())
    if CONFIGS not in content.config_records:
        return arrays
    record = RecordDict({CONFIGS: content.config_records[CONFIGS]})
    return arrays + int(recorddict_to_proto(record).ByteSize())


@dataclass
class SecureRound:
    """What one secure round gave: the global arrays plus the clients' weighted mean update,
    and the collect stage's replies with each node's bytes over all four stages."""

    arrays: dict[str, np.ndarray]
    replies: list[Any]
    sent: dict[int, int]
    received: dict[int, int]
    errors: list[str]
    """Each client that failed a stage, with its reason."""


def secure_round(
    grid: Any, messages: list[Any], arrays: dict[str, np.ndarray], fed: Any, server_round: int
) -> SecureRound:
    """Run SecAgg+'s four stages on the train ``messages`` greentune's strategy configured;
    raises ``FederationError`` when the protocol cannot finish (too few clients or shares)."""
    workflow = _workflow(fed, MAX_WEIGHT, fed.secagg_clip)
    mean, counted = _stages(grid, messages, workflow, fed, server_round)
    names = sorted(arrays)
    delta = dict(zip(names, mean, strict=True))
    merged = {k: (arrays[k].astype(np.float64) + delta[k]).astype(arrays[k].dtype) for k in names}
    return SecureRound(merged, counted.results, counted.sent, counted.received, counted.errors)


SUM_SCALE = 2.0**16
"""Secure sums: each client sends its sums divided by this public scale, which must then lie
within +-SUM_CLIP: sums up to 2^28 (about 2.7e8) in absolute value."""
SUM_CLIP = 2.0**12
SUM_LEVELS = 2**30
"""Quantization levels for sums (Flower quantizes into int32: at most 2^31)."""
SUM_LIMB = SUM_LEVELS / (2 * SUM_CLIP)
"""Levels per scaled unit: a value on this grid quantizes exactly (no stochastic rounding)."""
LIMBS = 3
"""Each sum travels as LIMBS values, all but the last on the grid: the last one's stochastic
rounding costs 2^-17 / SUM_LIMB^2 of a scaled unit (2^-35 of a sum), float64's own order."""


def split_sums(stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A client's sums as LIMBS limbs each (``k/0`` the leading one): every limb but the last
    on the quantization grid, so only the last is rounded. The splits are exact in float64."""
    out = {}
    for k, v in stats.items():
        u = np.asarray(v, dtype=np.float64) / SUM_SCALE
        peak = float(np.abs(u).max(initial=0.0))
        if peak > SUM_CLIP:
            raise ValueError(
                f"the skip path's sum {k} reaches {peak * SUM_SCALE:.3g}, beyond what a secure "
                f"sum carries ({SUM_CLIP * SUM_SCALE:.3g}): use model.skip_init=seasonal (a "
                "skip path fitted on nothing, so nothing to sum)"
            )
        for limb in range(LIMBS - 1):
            on_grid = np.floor(u * SUM_LIMB) / SUM_LIMB
            out[f"{k}/{limb}"] = on_grid
            u = (u - on_grid) * SUM_LIMB  # in [0, 1): the remainder, scaled up
        out[f"{k}/{LIMBS - 1}"] = u
    return out


def join_sums(parts: dict[str, np.ndarray], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """``split_sums``' inverse (on the clients' summed limbs)."""
    out = {}
    for k in keys:
        total = parts[f"{k}/{LIMBS - 1}"]
        for limb in reversed(range(LIMBS - 1)):
            total = parts[f"{k}/{limb}"] + total / SUM_LIMB
        out[k] = total * SUM_SCALE
    return out


def secure_sums(
    grid: Any, messages: list[Any], keys: tuple[str, ...], fed: Any, server_round: int
) -> tuple[dict[str, np.ndarray], SecureRound]:
    """The clients' element-wise sums of ``keys`` through SecAgg+ (the clients reply with
    ``split_sums``): every client weighs 1, so the unmasked mean times the clients that
    answered, times the scale, is the sum."""
    # a modulus above Flower's documented 2^32: its masks and sums are numpy int64, which wrap
    # at 2^64, a multiple of 2^62, so the sums stay right modulo 2^62 (tested end to end)
    workflow = _workflow(fed, 1.0, SUM_CLIP, quantization_range=SUM_LEVELS, modulus_range=2**62)
    mean, counted = _stages(grid, messages, workflow, fed, server_round)
    names = sorted(f"{k}/{limb}" for k in keys for limb in range(LIMBS))
    n = len(counted.results)  # the mean over the clients that answered, times them: the sum
    parts = {name: n * m for name, m in zip(names, mean, strict=True)}
    done = SecureRound({}, counted.results, counted.sent, counted.received, counted.errors)
    return join_sums(parts, keys), done


def _workflow(fed: Any, max_weight: float, clip: float, **ranges: int) -> Any:
    from flwr.server.workflow import SecAggPlusWorkflow

    return SecAggPlusWorkflow(
        num_shares=1.0,  # every sampled client a neighbour: fine for tens of clients
        reconstruction_threshold=fed.secagg_threshold,
        max_weight=max_weight,
        clipping_range=clip,
        timeout=fed.round_timeout_s,
        **ranges,
    )


def _stages(
    grid: Any, messages: list[Any], workflow: Any, fed: Any, server_round: int
) -> tuple[list[np.ndarray], _CountedGrid]:
    """SecAgg+'s four stages on ``messages`` (the collect stage sends each its own); the
    unmasked weighted mean, in the order of the replies' sorted array names."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict
    from flwr.server.compat.legacy_context import LegacyContext
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
        if i in (0, 1):
            # a client lost before the masks exist is treated as never sampled: Flower would
            # count it dead at the unmask stage, where nobody holds shares of its keys
            keep = set(state.active_node_ids)
            state.sampled_node_ids = keep
            state.nid_to_neighbours = {
                n: nb & keep for n, nb in state.nid_to_neighbours.items() if n in keep
            }
        if i == 0:  # the collect stage sends greentune's own message to each client
            state.nid_to_fitins = {
                m.metadata.dst_node_id: RecordDict(dict(m.content))
                for m in messages
                if m.metadata.dst_node_id in state.active_node_ids
            }
        if i == 2 and len(state.active_node_ids) < 3:
            # checked before the unmask stage reveals anything
            raise FederationError(
                f"round {server_round}: only {len(state.active_node_ids)} clients' masked "
                "vectors arrived; an aggregate of fewer than 3 is not released (each would "
                "learn the other's update); resume with --resume"
                + (f" ({'; '.join(counted.errors[:3])})" if counted.errors else "")
            )
    if not legacy.mean:
        raise FederationError(f"round {server_round}: no client result to aggregate")
    return legacy.mean, counted
