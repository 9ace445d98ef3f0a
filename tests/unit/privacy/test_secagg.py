"""Secure aggregation (SecAgg+, greentune.privacy.federated.secagg) through the real ServerApp
and ClientApp on the in-process engine: the same global weights as plain FedAvg up to the
quantization, no client's update in clear, drop-outs rebuilt, and clear refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.common import bytes_to_ndarray

from greentune.config import build_config
from greentune.errors import ConfigError
from greentune.privacy.federated import protocol as P
from greentune.privacy.federated.client import drop_cached
from greentune.privacy.federated.secagg import CONFIGS
from greentune.privacy.federated.server import FederationError
from greentune.privacy.federated.simulate import federate
from greentune.rundir import RunDir
from tests.unit.privacy.test_federated import CLIENTS, Recording, _config

ONE_ROUND = ("federated.references=[]", "federated.rounds=1", "federated.min_clients=2")


def _global(run: RunDir) -> dict[str, np.ndarray]:
    with np.load(run.path / "checkpoints" / "federated-state.npz") as z:
        return {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("global/")}


def _dropping(client: int, stage: str | None) -> Any:
    """A client app whose ``client``-th node fails round 1's train message (under SecAgg+:
    the message of ``stage``), once."""
    times = [1]

    def wrap(app: Any) -> Any:
        def call(msg: Any, context: Any) -> Any:
            node = context.node_config["partition-id"]
            ours = msg.content.config_records.get(P.CONFIG)
            configs = msg.content.config_records.get(CONFIGS)
            if (
                msg.metadata.message_type == P.TRAIN
                and node == client
                and times
                and ours is not None
                and int(ours["server-round"]) == 1  # round 0's train messages: the ridge's sums
                and (stage is None or (configs is not None and configs.get("stage") == stage))
            ):
                times.pop()
                raise RuntimeError("killed")
            return app(msg, context)

        return call

    return wrap


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, RunDir, Recording]:
    tmp = tmp_path_factory.mktemp("secagg")
    drop_cached()
    plain = federate(_config(tmp, *ONE_ROUND, name="plain"), echo=lambda m: None)
    drop_cached()
    engine = Recording()
    cfg = _config(tmp, *ONE_ROUND, "federated.secure_aggregation=true", name="secure")
    secure = federate(cfg, echo=lambda m: None, engine=engine)
    return plain, secure, engine


def _skip(run: RunDir) -> dict[str, np.ndarray]:
    with np.load(run.path / "federated" / "global.npz") as z:
        return {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("skip/")}


def test_the_ridge_summed_under_secagg_is_the_plain_federated_ridge(pair) -> None:
    plain, secure, _ = pair
    a, b = _skip(plain), _skip(secure)
    assert set(a) == {"weight", "x_mean", "y_mean", "alpha", "offsets"} == set(b)
    assert b["alpha"] == a["alpha"]  # the same design and alpha chosen on the pooled validation
    for k in ("weight", "x_mean", "y_mean", "offsets"):
        np.testing.assert_allclose(b[k], a[k], rtol=1e-7, atol=1e-9)
    logs = [r for r in secure.ledger.rows if r["extra"].get("message") == "ridge"]
    assert sorted(r["extra"]["client"] for r in logs) == sorted(CLIENTS)


def test_the_secure_average_is_the_plain_one_up_to_quantization(pair) -> None:
    plain, secure, _ = pair
    a, b = _global(plain), _global(secure)
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], atol=2e-5, rtol=0)
    (start, one), (start_s, one_s) = (
        [r["val_loss"] for r in run.metrics.federated["val_curve"]] for run in (plain, secure)
    )
    assert abs(one - start) > 1e-4  # the round moved the weights: the comparison means something
    assert (start_s, one_s) == pytest.approx((start, one), rel=1e-4)
    assert secure.metrics.federated["secure_aggregation"] is True
    assert secure.status == "complete"


def test_no_update_travels_in_clear_and_every_stage_is_counted(pair) -> None:
    plain, secure, engine = pair
    train = [r for r in engine.grid.received if r.metadata.message_type == P.TRAIN]
    stages = [dict(r.content.config_records[CONFIGS]) for r in train]
    # setup, share keys, collect, unmask: for the ridge's sums and for round 1
    assert len(train) == 2 * 4 * len(CLIENTS)
    for reply in train:
        assert all(len(rec) == 0 for rec in reply.content.array_records.values())
    masked = [s["masked_params"] for s in stages if "masked_params" in s]
    assert len(masked) == 2 * len(CLIENTS)
    for vectors in masked:
        values = np.concatenate([bytes_to_ndarray(b).ravel() for b in vectors])
        # unmasked, a small update quantizes near the middle of [0, 2^22]; masked, the values
        # spread over the whole modulus [0, 2^32)
        assert values.min() >= 0 and values.max() < 2**62  # the sums' modulus; rounds' 2^32
        assert np.median(values) > 2**28
    rows = [r for r in secure.ledger.rows if r["extra"].get("message") == "train"]
    plain_rows = [r for r in plain.ledger.rows if r["extra"].get("message") == "train"]
    assert sorted(r["extra"]["client"] for r in rows) == sorted(CLIENTS)
    for row, ref in zip(
        sorted(rows, key=lambda r: r["extra"]["client"]),
        sorted(plain_rows, key=lambda r: r["extra"]["client"]),
        strict=True,
    ):
        # the masked vector is int64 where the plain reply is float32, plus keys and shares
        assert row["extra"]["bytes_received"] > 1.9 * ref["extra"]["bytes_received"]
        assert row["energy_j"]["client"] > 0


def test_a_client_lost_after_sharing_its_keys_is_unmasked_from_the_others_shares(
    tmp_path: Path,
) -> None:
    drop_cached()
    plain = federate(
        _config(tmp_path, *ONE_ROUND, name="plain"),
        echo=lambda m: None,
        engine=Recording(_dropping(1, None)),
    )
    drop_cached()
    logs: list[str] = []
    secure = federate(
        _config(tmp_path, *ONE_ROUND, "federated.secure_aggregation=true", name="secure"),
        echo=logs.append,
        engine=Recording(_dropping(1, "collect_masked_vectors")),
    )
    rows = [r for r in secure.ledger.rows if r["extra"].get("message") == "train"]
    assert len(rows) == 2
    a, b = _global(plain), _global(secure)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], atol=2e-5, rtol=0)


def test_what_cannot_be_secured_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use client-side DP"):
        build_config(
            overrides=[
                "federated.secure_aggregation=true",
                "federated.central_noise_multiplier=1.0",
            ]
        )
    with pytest.raises(ConfigError, match="secagg_threshold in"):
        build_config(overrides=["federated.secagg_threshold=0"])
    drop_cached()
    cfg = _config(
        tmp_path, *ONE_ROUND, "federated.secure_aggregation=true", "federated.fraction=0.5"
    )
    with pytest.raises(FederationError, match="needs at least 3 sampled clients, got 2"):
        federate(cfg, echo=lambda m: None, engine=Recording())
    drop_cached()
    cfg = _config(
        tmp_path,
        *ONE_ROUND,
        "federated.secure_aggregation=true",
        "federated.secagg_clip=1e-9",
        name="clipped",
    )
    with pytest.raises(FederationError, match=r"collect stage.*federated\.secagg_clip=1e-09"):
        federate(cfg, echo=lambda m: None, engine=Recording())
