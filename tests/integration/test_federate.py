"""``greentune federate`` on Flower's simulation engine (Ray actors: the clients run in other
processes): the same scores as the in-process engine, and the server's process never opens a
data file while the federation runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from greentune.privacy.federated import simulate
from greentune.privacy.federated.client import drop_cached
from greentune.privacy.federated.partitions import client_names
from tests.unit.privacy.test_federated import Recording, _config

OPENED: list[str] = []
WATCH: dict[str, Any] = {"path": None}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    path = WATCH["path"]
    if path is not None and event == "open" and str(args[0]).endswith(path):
        OPENED.append(str(args[0]))


def test_the_simulation_engine_matches_inline_and_the_server_reads_no_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ray")
    cfg = _config(tmp_path, "federated.references=[local]", "federated.rounds=1", name="ray")
    names = client_names(cfg)  # the launcher counts the clients before the server starts
    monkeypatch.setattr(simulate, "client_names", lambda c: names)
    sys.addaudithook(_audit)  # hooks cannot be removed: WATCH switches this one off after
    WATCH["path"] = Path(str(cfg.data.path)).name
    client_names(cfg)  # the control: reading the file here is seen
    assert OPENED
    OPENED.clear()
    try:
        ray_run = simulate.federate(cfg, echo=lambda m: None)
    finally:
        WATCH["path"] = None
    assert OPENED == []
    drop_cached()
    inline = simulate.federate(
        _config(tmp_path, "federated.references=[local]", "federated.rounds=1", name="inline"),
        echo=lambda m: None,
        engine=Recording(),
    )
    ray_per = ray_run.metrics.federated["per_client"]
    inline_per = inline.metrics.federated["per_client"]
    for client in names:
        for row in ("federated", "local"):
            assert ray_per[client][row]["mape"] == pytest.approx(
                inline_per[client][row]["mape"], rel=1e-5
            )
    clients = {r["extra"]["client"] for r in ray_run.ledger.rows if "client" in r["extra"]}
    assert clients == set(names)
