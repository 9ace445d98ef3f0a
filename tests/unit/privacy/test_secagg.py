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
from tests.conftest import make_series
from tests.unit.privacy.test_federated import CLIENTS, Recording, _config

ONE_ROUND = ("federated.references=[]", "federated.rounds=1", "federated.min_clients=2")


def _global(run: RunDir) -> dict[str, np.ndarray]:
    with np.load(run.path / "checkpoints" / "federated-state.npz") as z:
        return {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("global/")}


def _dropping(client: int, stage: str | None) -> Any:
    """A client app whose ``client``-th node fails round 1's train message (under SecAgg+:
    the message of ``stage``; round 0's train messages carry the ridge's sums), once."""
    times = [1]

    def wrap(app: Any) -> Any:
        def call(msg: Any, context: Any) -> Any:
            node = context.node_config["partition-id"]
            configs = msg.content.config_records.get(CONFIGS)
            ours = msg.content.config_records.get(P.CONFIG)
            if configs is not None:  # SecAgg+'s stages say their round in the group id
                hit = msg.metadata.group_id == "1" and configs.get("stage") == stage
            else:
                hit = stage is None and ours is not None and int(ours["server-round"]) == 1
            if msg.metadata.message_type == P.TRAIN and node == client and times and hit:
                times.pop()
                raise RuntimeError("killed")
            return app(msg, context)

        return call

    return wrap


def _wide4(tmp: Path) -> Path:
    """Four clients: one may drop out and still leave the 3 an aggregate needs."""
    wide = make_series(seed=1).rename(columns={"load_mw": "a"})
    for name, seed, scale in (("b", 2, 1.5), ("c", 3, 0.7), ("d", 4, 1.2)):
        wide[name] = make_series(seed=seed)["load_mw"].to_numpy() * scale
    path = tmp / "wide4.csv"
    wide.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def dropped(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, Path]:
    """Plain FedAvg over four clients, the second failing round 1."""
    tmp = tmp_path_factory.mktemp("dropped")
    drop_cached()
    cfg = _config(tmp, *ONE_ROUND, path=_wide4(tmp), name="plain")
    return federate(cfg, echo=lambda m: None, engine=Recording(_dropping(1, None))), tmp


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, RunDir, Recording]:
    tmp = tmp_path_factory.mktemp("secagg")
    drop_cached()
    plain = federate(
        _config(tmp, *ONE_ROUND, name="plain"), echo=lambda m: None, engine=Recording()
    )
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
    for message in ("ridge", "offsets"):
        rows = [r for r in secure.ledger.rows if r["extra"].get("message") == message]
        assert sorted(r["extra"]["client"] for r in rows) == sorted(CLIENTS)
    assert np.ptp(a["offsets"]) > 0.1  # real quantiles (three of them, over the horizon)


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
    types = {r.metadata.message_type for r in engine.grid.received}
    assert P.RIDGE not in types and P.OFFSETS not in types  # both travel as secure sums
    train = [r for r in engine.grid.received if r.metadata.message_type == P.TRAIN]
    stages = [dict(r.content.config_records[CONFIGS]) for r in train]
    # setup, share keys, collect, unmask: for the ridge's sums, the offsets and round 1
    assert len(train) == 3 * 4 * len(CLIENTS)
    for reply in train:
        assert all(len(rec) == 0 for rec in reply.content.array_records.values())
    masked = [
        (r.metadata.group_id, s["masked_params"])
        for r, s in zip(train, stages, strict=True)
        if "masked_params" in s
    ]
    assert sorted(g for g, _ in masked) == ["0"] * 2 * len(CLIENTS) + ["1"] * len(CLIENTS)
    for group, vectors in masked:
        values = np.concatenate([bytes_to_ndarray(b).ravel() for b in vectors])
        # unmasked, a round's small update quantizes near 2^21 (the middle of 2^22 levels) and
        # a sum's limbs below 2^30; masked, the values spread over the modulus, 2^32 or 2^62
        modulus = 2**62 if group == "0" else 2**32
        assert np.median(values) > modulus / 8
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


@pytest.mark.parametrize(
    "stage",
    [
        "setup",  # before any key exists: left out as if never sampled
        "collect_masked_vectors",  # after the key exchange: its masks rebuilt from shares
    ],
)
def test_a_client_lost_mid_round_leaves_the_average_of_the_others(dropped, stage: str) -> None:
    plain, tmp = dropped
    drop_cached()
    logs: list[str] = []
    cfg = _config(
        tmp, *ONE_ROUND, "federated.secure_aggregation=true", path=tmp / "wide4.csv", name=stage
    )
    secure = federate(cfg, echo=logs.append, engine=Recording(_dropping(1, stage)))
    rows = [r for r in secure.ledger.rows if r["extra"].get("message") == "train"]
    assert sorted(r["extra"]["client"] for r in rows) == ["a", "c", "d"]
    assert any(m.startswith("round 1 train: node ") and "RuntimeError: killed" in m for m in logs)
    assert "round 1 train: went on without 1 client(s)" in logs
    a, b = _global(plain), _global(secure)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], atol=2e-5, rtol=0)


def test_an_aggregate_of_two_is_never_released(tmp_path: Path) -> None:
    drop_cached()
    cfg = _config(tmp_path, *ONE_ROUND, "federated.secure_aggregation=true")
    engine = Recording(_dropping(1, "collect_masked_vectors"))
    with pytest.raises(FederationError, match="only 2 clients' masked vectors arrived"):
        federate(cfg, echo=lambda m: None, engine=engine)
    unmask = [
        m
        for m in engine.grid.sent
        if CONFIGS in m.content.config_records
        and m.content.config_records[CONFIGS].get("stage") == "unmask"
        and m.metadata.group_id == "1"
    ]
    assert unmask == []  # stopped before the unmask stage could reveal the two-client sum


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
