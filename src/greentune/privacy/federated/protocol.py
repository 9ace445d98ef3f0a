"""What travels between the server and the clients: message types and record names.

Every message holds at most one ``ArrayRecord`` ("arrays": parameter arrays), one
``MetricRecord`` ("metrics": named numbers) and one ``ConfigRecord``: from the server "config"
(the run's config as YAML text, without data; the round; FedProx's mu), from a client "meta"
(only its name, its energy figures' kind and its carbon zone). Nothing else: no rows, no
scaler, no prediction (tests/unit/privacy/test_federated.py reads every message).
"""

from __future__ import annotations

from typing import Any

import numpy as np

RIDGE = "query.ridge"
"""Client -> sums of its windows (greentune.privacy.federated.ridge)."""
OFFSETS = "query.offsets"
"""Server sends the pooled ridge; client -> its residual quantiles under it."""
INIT = "query.init"
"""Server sends the skip fit (kept in the client's node state); client -> its start weights."""
TRAIN = "train"
"""Server sends the global trainable arrays; client -> them after local steps."""
EVALUATE = "evaluate"
"""Server sends the global arrays; client -> its validation loss."""
TEST = "evaluate.test"
"""Server sends the chosen global arrays; client -> its test scores, its references'."""

SECURE_QUERY = "secure-query"
"""In a train message's config under secure aggregation: the query it carries instead of a
training round (SecAgg+ masks train messages only): RIDGE, the ridge's sums; OFFSETS, the
residual quantiles weighted by training rows, and the rows (OFFSET_KEYS)."""
OFFSET_KEYS = ("weighted_offsets", "rows")
"""A secure OFFSETS reply's sums: quantiles x training rows (Q, H*T), and the rows (1,)."""

ARRAYS, METRICS, CONFIG, META = "arrays", "metrics", "config", "meta"
META_KEYS = ("client", "kind", "zone")
"""All a client's ``meta`` may hold."""
WEIGHT = "num-examples"
"""Flower's weighting key: samples a client trained on (or windows it scored)."""
ENERGY_KEYS = ("energy_j", "duration_s", "emissions_g", "intensity_g_per_kwh")
"""Per reply: what the client's work for it cost, metered on the client (emissions -1: none)."""
OWN_WEIGHT = "personal-own-weight"
"""In a test reply under ``federated.personal_skip``: the weight a of the client's own ridge in
its skip start (one number in [0, 1], fitted on its validation windows)."""
SHAPE_KEYS = ("data.context_length", "data.horizon", "model.patch_len")
"""An init reply's window shape in steps, as the client resolved it from its own data: the
server, which never reads data, writes the clients' common shape into the run's config.yaml."""


def to_arrays(record: Any) -> dict[str, np.ndarray]:
    """An ``ArrayRecord`` as plain numpy arrays by name."""
    return {name: record[name].numpy() for name in record}


def from_arrays(arrays: dict[str, np.ndarray]) -> Any:
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({name: Array(np.ascontiguousarray(a)) for name, a in arrays.items()})
