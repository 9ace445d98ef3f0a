"""greentune serve as users start it: a real uvicorn process on 127.0.0.1, SIGHUP reload,
SIGTERM drain, the ledger written at exit, and several worker processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from greentune.energy.ledger import Ledger
from greentune.serve.keys import KeyStore
from tests.conftest import tiny_classify_run


@pytest.fixture(scope="module")
def run_and_key(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve-p")
    run = tiny_classify_run(tmp, 120, 2)
    keys = tmp / "keys.json"
    token, _ = KeyStore(keys).add("t", ["classify", "admin"])
    return run, keys, token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(run, keys: Path, *extra: str, scheme: str = "http") -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "greentune", "serve", str(run.path), "--port", str(port)]
    cmd += ["--keys", str(keys), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )
    base = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read() if proc.stdout else "exited")
        try:
            if httpx.get(f"{base}/readyz", timeout=1, verify=False).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the service did not become ready in 60 s")


def test_sighup_reloads_and_sigterm_drains_then_writes_the_ledger(run_and_key):
    run, keys, token = run_and_key
    h = {"X-API-Key": token}
    before = len([r for r in Ledger.load(run.path).rows if r["phase"] == "serve"])
    proc, base = start(run, keys, "--max-wait-ms", "400", "--max-batch-size", "64")
    try:
        r = httpx.post(f"{base}/v1/classify", json={"texts": ["feeder down"]}, headers=h)
        assert r.status_code == 200 and float(r.headers["x-energy-joules"]) > 0
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while 'greentune_reloads_total{outcome="ok"} 1.0' not in httpx.get(f"{base}/metrics").text:
            assert time.monotonic() < deadline, "SIGHUP did not reload"
            time.sleep(0.2)
        # a request waiting for its batch (400 ms) when SIGTERM arrives is still answered
        got: list[int] = []
        t = threading.Thread(
            target=lambda: got.append(
                httpx.post(
                    f"{base}/v1/classify", json={"texts": ["late"]}, headers=h, timeout=30
                ).status_code
            )
        )
        t.start()
        time.sleep(0.15)
        proc.send_signal(signal.SIGTERM)
        t.join(30)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert got == [200], out
    # uvicorn re-raises the SIGTERM it handled once the drain is done
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert (
        "reloaded:" in out and "stopped after 2 requests" in out and "POST /v1/classify 200" in out
    )
    rows = [r for r in Ledger.load(run.path).rows if r["phase"] == "serve"]
    assert len(rows) == before + 1
    assert rows[-1]["extra"]["requests"] == 2 and rows[-1]["ok"]
    assert not (run.path / "energy-journal").exists()


# slow: several worker processes (40 s); CI keeps the one-worker server
@pytest.mark.slow
def test_several_workers_serve_and_merge_their_metrics(run_and_key):
    run, keys, token = run_and_key
    proc, base = start(run, keys, "--workers", "2")
    try:
        h = {"Authorization": f"Bearer {token}"}
        codes = [
            httpx.post(f"{base}/v1/classify", json={"texts": ["x"]}, headers=h).status_code
            for _ in range(6)
        ]
        metrics = httpx.get(f"{base}/metrics").text
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert codes == [200] * 6, out
    # both workers' samples, whichever answered the scrape
    assert 'greentune_requests_total{route="/v1/classify",status="200"} 6.0' in metrics, metrics
    sessions = [s for s in Ledger.load(run.path).sessions if s["command"] == "serve"]
    assert len(sessions) >= 3  # the first test's and one per worker


def test_a_bad_start_is_one_clear_error(run_and_key, tmp_path):
    run, _, _ = run_and_key
    cmd = [sys.executable, "-m", "greentune", "serve", str(run.path)]
    r = subprocess.run(
        [*cmd, "--keys", str(tmp_path / "none.json")], capture_output=True, text=True
    )
    assert r.returncode == 2 and "no API keys in" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*cmd, "--no-auth", "--variant", "int4"], capture_output=True, text=True)
    assert r.returncode == 2 and "has no variant 'int4'" in r.stderr


def test_tls_serves_https_only(run_and_key, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a test certificate")
    run, keys, token = run_and_key
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    proc, base = start(
        run, keys, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), scheme="https"
    )
    try:
        r = httpx.post(
            f"{base}/v1/classify",
            json={"texts": ["x"]},
            headers={"X-API-Key": token},
            verify=False,
        )
        assert r.status_code == 200 and base.startswith("https://")
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not answered
            httpx.get(base.replace("https://", "http://") + "/healthz", timeout=2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
