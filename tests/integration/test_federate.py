"""``greentune federate`` on Flower's simulation engine (Ray actors: the clients run in other
processes): the same scores as the in-process engine, and the server's process never opens a
data file while the federation runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from greentune.privacy.federated import simulate
from greentune.privacy.federated.client import drop_cached
from greentune.privacy.federated.partitions import client_names
from tests.conftest import series_overrides
from tests.unit.privacy.test_federated import Recording, _config

OPENED: list[str] = []
WATCH: dict[str, Any] = {"path": None}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    path = WATCH["path"]
    if path is not None and event == "open" and str(args[0]).endswith(path):
        OPENED.append(str(args[0]))


# slow: Ray's start-up and actors (90 s beside the rest); CI runs the in-process engine
@pytest.mark.slow
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


# ----------------------------------------------------------------------------- deployment


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "greentune", "federate", *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """The process and what it started (a SuperNode's ClientApp processes): its session."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _wait_for(path: Path, text: str, timeout_s: float, procs: list[Any]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file() and text in path.read_text():
            return
        time.sleep(0.5)
    logs = "\n".join(p.read_text()[-2000:] for p in procs if isinstance(p, Path) and p.exists())
    raise AssertionError(f"{text!r} not in {path} after {timeout_s} s\n{logs}")


def _certificates(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (TLS between the processes)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("greentune test CA"))
        .issuer_name(name("greentune test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


# 250-290 s, most of it waiting for Flower's heartbeats (30 s interval, 2 missed before a node
# counts as gone): over CI's budget on its own. benchmarks/slow_tests.py runs it.
@pytest.mark.slow
def test_server_and_clients_as_processes_survive_a_killed_client_that_rejoins(
    tmp_path: Path,
) -> None:
    """SuperLink + 3 SuperNodes on 127.0.0.1 over TLS, each client with only its own file: a
    client killed (SIGKILL, the whole process group) after round 1; round 2 completes with the
    other two; the client restarts, rejoins, gets the skip fit before it trains or validates
    again, and is scored in the test."""
    cfg = _config(tmp_path, name="dep")
    wide = str(cfg.data.path)
    own = _own_files(tmp_path, wide)
    port = _free_port()
    certs = _certificates(tmp_path)
    server_args = [
        "server",
        *[o for o in _overrides(tmp_path, wide) if not o.startswith("data.path")],
        "federated.rounds=3",
        "federated.local_steps=2",
        "federated.references=[]",
        "federated.min_clients=2",
        "federated.round_timeout_s=120",  # a live client's reply took ~40 s on a slow day
        "--expect",
        "3",
        "--address",
        f"127.0.0.1:{port}",
        *_server_tls(certs),
    ]
    logs = tmp_path / "logs"
    logs.mkdir()
    server = _start(server_args, logs / "server.txt")
    clients: dict[int, subprocess.Popen[bytes]] = {}

    def client(k: int) -> subprocess.Popen[bytes]:
        return _start(
            _client_args("abc"[k], port, own, tmp_path / f"client{k}", certs),
            logs / f"client{k}-{time.monotonic_ns()}.txt",
        )

    run_log = tmp_path / "runs" / "dep" / "log.txt"
    try:
        for k in range(3):
            clients[k] = client(k)
        # generous waits: each message starts a client-app process per client (torch and all),
        # three at once on two cores; on a slow day the first round took over 4 minutes
        _wait_for(run_log, "round 1/3", 600, [logs / "server.txt"])
        _kill(clients[2])
        _wait_for(run_log, "round 2 train: went on without", 600, [logs / "server.txt"])
        clients[2] = client(2)
        assert server.wait(timeout=900) == 0, (logs / "server.txt").read_text()[-3000:]
    finally:
        for proc in [*clients.values(), server]:
            _kill(proc)
    text = run_log.read_text()
    assert "(TLS)" in (logs / "server.txt").read_text()
    assert "round 2 train: went on without 1 client(s)" in text
    assert "client(s) joined: c" in text
    metrics = json.loads((tmp_path / "runs" / "dep" / "metrics.json").read_text())
    assert metrics["federated"]["clients"] == ["a", "b", "c"]
    train = [
        r["extra"]
        for r in json.loads((tmp_path / "runs" / "dep" / "energy.json").read_text())["rows"]
        if r.get("extra", {}).get("message") == "train"
    ]
    rounds = {c: {r["round"] for r in train if r["client"] == c} for c in "abc"}
    assert rounds["a"] == rounds["b"] == {1, 2, 3}
    assert 1 in rounds["c"] and 2 not in rounds["c"]  # killed in round 2, back for the test
    assert "c" in metrics["federated"]["per_client"]
    # each client keeps its own run (the global model with its own scaler), on its side
    assert (tmp_path / "client2" / "c" / "model" / "scaler.json").is_file()
    assert not (tmp_path / "runs" / "dep" / "clients").exists()


def _own_files(tmp: Path, wide: str) -> dict[str, Path]:
    """What each utility holds: its series (named as it likes) and temperature, one file each."""
    frame = pd.read_csv(wide)
    own = {}
    for name in "abc":
        own[name] = tmp / f"{name}.csv"
        frame[["ts", name, "temp_c"]].rename(columns={name: "load"}).to_csv(own[name], index=False)
    return own


def _server_tls(certs: dict[str, Path]) -> list[str]:
    return [
        f"--ssl-certfile={certs['cert']}",
        f"--ssl-keyfile={certs['key']}",
        f"--ssl-ca-certfile={certs['ca']}",
    ]


def _client_args(
    name: str, port: int, own: dict[str, Path], workdir: Path, certs: dict[str, Path]
) -> list[str]:
    return [
        "client",
        "--partition",
        name,
        "--server",
        f"127.0.0.1:{port}",
        "--data",
        str(own[name]),
        "--workdir",
        str(workdir),
        f"--root-certificates={certs['ca']}",
    ]


def _overrides(tmp: Path, wide: str) -> list[str]:
    base = [o for o in series_overrides(Path(wide), tmp / "runs", "dep") if "data.target" not in o]
    return [*base, "train.batch_size=8"]


def _node_keys(folder: Path, name: str, key: Any = None) -> tuple[Path, Path]:
    """A key pair in OpenSSH format: ``key``, else a new elliptic-curve one, as
    `ssh-keygen -t ecdsa -b 384` writes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = key or ec.generate_private_key(ec.SECP384R1())
    private, public = folder / name, folder / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    return private, public


# a deployment of one round under SecAgg+: Flower starts a ClientApp process per message (a
# few seconds of imports each), and the ridge's sums, the offsets and the round each take
# SecAgg+'s four stages: several minutes here, over CI's budget. benchmarks/slow_tests.py
@pytest.mark.slow
def test_only_clients_with_registered_keys_join(tmp_path: Path) -> None:
    """SuperLink over TLS with node authentication and three registered keys: a client with an
    unregistered key, and one with none, exit 2 saying why; the three registered ones train,
    under SecAgg+ (the deployed path of the same stages the in-process engine tests)."""
    cfg = _config(tmp_path, name="dep")
    wide = str(cfg.data.path)
    own = _own_files(tmp_path, wide)
    keys = {name: _node_keys(tmp_path, name) for name in ("a", "b", "c", "stranger")}
    port = _free_port()
    certs = _certificates(tmp_path)
    server_args = [
        "server",
        *[o for o in _overrides(tmp_path, wide) if not o.startswith("data.path")],
        "federated.rounds=1",
        "federated.local_steps=2",
        "federated.references=[]",
        "federated.secure_aggregation=true",
        "--expect",
        "3",
        "--address",
        f"127.0.0.1:{port}",
        *_server_tls(certs),
        "--node-auth",
        *[arg for name in "abc" for arg in ("--node-key", str(keys[name][1]))],
    ]
    logs = tmp_path / "logs"
    logs.mkdir()
    server = _start(server_args, logs / "server.txt")

    def client(k: int, key: Path | None) -> subprocess.Popen[bytes]:
        label = f"client{k}-{key.name if key else 'none'}"
        return _start(
            [
                *_client_args("abc"[k], port, own, tmp_path / label, certs),
                *(["--auth-key", str(key)] if key else []),
            ],
            logs / f"{label}.txt",
        )

    procs = [server]
    try:
        _wait_for(logs / "server.txt", "waiting for 3 clients", 120, [logs / "server.txt"])
        stranger, keyless = client(0, keys["stranger"][0]), client(1, None)
        procs += [stranger, keyless]
        assert stranger.wait(timeout=120) == 2
        assert keyless.wait(timeout=120) == 2
        procs += [client(k, keys["abc"[k]][0]) for k in range(3)]
        assert server.wait(timeout=1200) == 0, (logs / "server.txt").read_text()[-3000:]
    finally:
        for proc in procs:
            _kill(proc)
    said = (logs / "server.txt").read_text()
    assert "3 client key(s) registered: a.pub, b.pub, c.pub" in said
    refused = (logs / "client0-stranger.txt").read_text()
    assert f"the server refused this client's key {keys['stranger'][0]}" in refused
    assert "--auth-key PRIVATE_KEY" in (logs / "client1-none.txt").read_text()
    metrics = json.loads((tmp_path / "runs" / "dep" / "metrics.json").read_text())
    assert sorted(metrics["federated"]["per_client"]) == ["a", "b", "c"]
    assert metrics["federated"]["secure_aggregation"] is True
    assert "summed under SecAgg+" in (tmp_path / "runs" / "dep" / "log.txt").read_text()
