"""Real deployment: the server and every client as separate processes (Flower's SuperLink and
SuperNodes), on one machine or many.

    greentune federate server CONFIG --clients 3           # SuperLink + the ServerApp
    greentune federate client --partition 0 --server HOST:8000 --data my_utility.csv

``server`` starts ``flower-superlink``, writes a Flower app folder (a pyproject.toml naming
``server_app`` and ``client_app`` below) into the run directory and submits it with
``flwr run``; the ServerApp then drives the rounds (``rounds.drive``) in its own process and
writes the run directory. ``client`` starts ``flower-supernode``, whose ClientApp process runs
``client_app`` with the node's config (partition, data path, workdir, carbon). The server's
processes never open a data file: it learns the clients' names from their replies.

TLS: ``--ssl-certfile/--ssl-keyfile/--ssl-ca-certfile`` on the server, ``--root-certificates``
on the clients; node authentication (``nodeauth.py``): the server's ``--node-auth`` with the
clients' public keys (``--node-key``), each client's ``--auth-key`` (its private key). Without
TLS the traffic is plain HTTP: say ``--insecure``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from greentune.config import RunConfig
from greentune.errors import ConfigError, GreentuneError
from greentune.privacy.federated.apps import client_app as make_client_app
from greentune.privacy.federated.nodeauth import check_private_key, refused, register
from greentune.rundir import RunDir

Log = Callable[[str], None]
APP_DIR, HOME_DIR = "flower-app", "flower-home"
DEFAULT_ADDRESS = "127.0.0.1:8000"
"""Flower 1.42's SuperLink serves its Fleet, Control and Runtime APIs on one HTTP port."""

PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "greentune-federate"
version = "1.0.0"
description = "greentune federated fine-tuning (greentune.privacy.federated.deploy)"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "greentune"

[tool.flwr.app.components]
serverapp = "greentune.privacy.federated.deploy:server_app"
clientapp = "greentune.privacy.federated.deploy:client_app"

[tool.flwr.app.config]
run-dir = ""
clients = 0
resume = false
"""


def _server_main(grid: Any, context: Any) -> None:
    """The ServerApp's main, in Flower's ``flwr-serverapp`` process."""
    import logging

    from greentune.energy.session import metered
    from greentune.privacy.federated.rounds import drive
    from greentune.privacy.federated.server import Server
    from greentune.privacy.federated.simulate import add_client_rows, conclude
    from greentune.train.run import run_logger

    logging.getLogger("flwr").setLevel(logging.WARNING)
    run_dir = RunDir(str(context.run_config["run-dir"]))
    cfg = run_dir.config
    log = run_logger(run_dir.log_path, print)
    n = int(context.run_config["clients"])
    server = None
    try:
        resume = bool(context.run_config["resume"])
        with metered(run_dir.path, cfg.energy, "federate", log) as meter, meter.window("federate"):
            server = Server(grid, cfg, run_dir.path, n, log)
            outcome = drive(server, resume=resume)
        conclude(run_dir, cfg, outcome, server)
    except BaseException as exc:
        add_client_rows(run_dir, server)
        run_dir.set_status("failed", task=cfg.task, error=str(exc)[:500])
        raise


def _make_server_app() -> Any:
    from flwr.serverapp import ServerApp

    app = ServerApp()
    app.main()(_server_main)
    return app


# Flower checks that these names exist in the module (``[tool.flwr.app.components]``)
server_app = _make_server_app()
client_app = make_client_app()


# ---------------------------------------------------------------------------- processes


def flower_env(home: Path) -> dict[str, str]:
    """Flower's processes find each other on PATH (flower-superexec, flwr-serverapp): the
    interpreter's bin folder first; their state and installed apps under ``home``."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_UPDATE_CHECK": "1",
    }


def tls_args(insecure: bool, certs: dict[str, str | None]) -> list[str]:
    given = {k: v for k, v in certs.items() if v}
    if insecure and given:
        raise ConfigError("--insecure and TLS files do not go together: choose one")
    if not insecure and not given:
        raise ConfigError(
            "say how to secure the connection: TLS files (--ssl-certfile, --ssl-keyfile, "
            "--ssl-ca-certfile on the server; --root-certificates on a client) or --insecure "
            "for plain HTTP on a trusted network (docs/federate.md)"
        )
    for path in given.values():
        if not Path(path).is_file():
            raise ConfigError(f"{path}: TLS file not found")
    # absolute: Flower's connection config (the server's flwr run) refuses a relative CA path
    return ["--insecure"] if insecure else [f"--{k}={Path(v).resolve()}" for k, v in given.items()]


def serve(
    run_dir: RunDir,
    clients: int,
    security: list[str],
    address: str = DEFAULT_ADDRESS,
    resume: bool = False,
    log: Log = print,
    node_auth: bool = False,
    node_keys: Sequence[Path] = (),
) -> None:
    """Start the SuperLink, register ``node_keys`` (under ``node_auth``), submit the app, wait
    for the run to end, stop the SuperLink."""
    home = run_dir.path / "federated" / HOME_DIR
    app = run_dir.path / "federated" / APP_DIR
    app.mkdir(parents=True, exist_ok=True)
    (app / "pyproject.toml").write_text(PYPROJECT)
    host, port = _split_address(address)
    secure = "--insecure" not in security
    (home / "config.toml").parent.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "greentune"\n\n[superlink.greentune]\n'
        f'address = "{host}:{port}"\n'
        + ("insecure = true\n" if not secure else _root_cert_line(security))
    )
    env = flower_env(home)
    cmd = [
        "flower-superlink",
        *security,
        "--disable-runtime-dependency-installation",
        "--host",
        host,
        "--port",
        str(port),
    ]
    if node_auth:
        cmd.append("--enable-supernode-auth")
    superlink = _start(cmd, env, run_dir.path / "federated" / "superlink.log")
    try:
        _wait_port(host, port, superlink, run_dir.path / "federated" / "superlink.log")
        if node_keys:  # before the clients are told to come: an unregistered one is refused
            register(f"{host}:{port}", _ca_certfile(security), node_keys, log)
        log(
            f"federate: SuperLink on {host}:{port} ({'TLS' if secure else 'plain HTTP'}); "
            f"waiting for {clients} clients (greentune federate client --server {host}:{port})"
        )
        where = run_dir.path.resolve()
        run_cfg = f'run-dir="{where}" clients={clients} resume={str(resume).lower()}'
        flwr = shutil.which("flwr", path=env["PATH"]) or "flwr"
        out_path = run_dir.path / "federated" / "flwr-run.log"
        with out_path.open("wb") as out:
            submitted = subprocess.Popen(
                [flwr, "run", str(app), "greentune", "--run-config", run_cfg, "--stream"],
                env=env,
                cwd=app,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            code = _follow(run_dir.log_path, submitted, log)
        if code != 0:
            tail = out_path.read_text(errors="replace").strip()[-500:]
            raise GreentuneError(f"flwr run failed (exit {code}): {tail}")
        _wait_finished(run_dir, superlink)
    finally:
        _stop(superlink)


def _follow(log_path: Path, proc: subprocess.Popen[bytes], log: Log) -> int:
    """Echo the run's log.txt (written by the ServerApp's process) while ``flwr run`` waits."""
    seen = log_path.stat().st_size if log_path.exists() else 0
    while True:
        code = proc.poll()
        if log_path.exists() and log_path.stat().st_size > seen:
            with log_path.open("rb") as fh:
                fh.seek(seen)
                chunk = fh.read()
            whole = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits
            seen += len(whole)
            for line in whole.decode(errors="replace").splitlines():
                log(line)
        if code is not None:
            return code
        time.sleep(0.5)


def join(
    partition: str,
    server: str,
    security: list[str],
    node: dict[str, str],
    log: Log = print,
    auth_key: Path | None = None,
) -> int:
    """Run a SuperNode for one client until it is stopped (or the server goes away for good);
    a ConfigError when the server refuses its key (or its lack of one)."""
    if auth_key is not None:
        check_private_key(auth_key)
    home = Path(node.get("workdir") or ".") / HOME_DIR
    home.mkdir(parents=True, exist_ok=True)
    config = " ".join(f'{k}="{v}"' for k, v in {"partition": partition, **node}.items() if v)
    cmd = [
        "flower-supernode",
        *security,
        "--superlink",
        server,
        "--node-config",
        config,
        "--port",
        str(_free_port()),
    ]
    if auth_key is not None:  # Flower derives the public key from it
        cmd += ["--auth-supernode-private-key", str(auth_key)]
    log(f"federate client {partition}: joining {server} (Flower's log: {home / 'supernode.log'})")
    # the SuperNode stays in this command's process group, so that a signal to the group
    # (a kill of the client, a terminal's Ctrl-C) reaches it and its ClientApp processes; a
    # SIGTERM to this process alone is passed on
    node_log = home / "supernode.log"
    start = node_log.stat().st_size if node_log.exists() else 0
    with node_log.open("ab") as fh:
        node_proc = subprocess.Popen(cmd, env=flower_env(home), stdout=fh, stderr=fh)
    previous = signal.signal(signal.SIGTERM, lambda *_: node_proc.terminate())
    try:
        code = node_proc.wait()
        if code != 0:
            with node_log.open("rb") as fh:
                fh.seek(start)
                _check_refused(fh.read().decode(errors="replace"), auth_key)
        return code
    except KeyboardInterrupt:
        return 130
    finally:
        if node_proc.poll() is None:
            node_proc.terminate()
            try:
                node_proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                node_proc.kill()
        signal.signal(signal.SIGTERM, previous)


def _check_refused(text: str, auth_key: Path | None) -> None:
    if not refused(text):
        return
    if auth_key is None:
        raise ConfigError(
            "the server admits registered clients only (node authentication): start this "
            "client with --auth-key PRIVATE_KEY, whose public key the server registered"
        )
    raise ConfigError(
        f"the server refused this client's key {auth_key}: its public key is not registered "
        f"there (greentune federate server --node-key {auth_key}.pub, or `flwr supernode "
        "register`); a client restarted after a kill -9 is refused for about a minute, until "
        "the server counts its old connection gone"
    )


def _ca_certfile(security: list[str]) -> str:
    for arg in security:
        if arg.startswith("--ssl-ca-certfile="):
            return arg.split("=", 1)[1]
    raise ConfigError("node authentication needs TLS: give --ssl-ca-certfile (and the rest)")


def _root_cert_line(security: list[str]) -> str:
    for arg in security:
        if arg.startswith("--ssl-ca-certfile="):
            return f'root-certificates = "{arg.split("=", 1)[1]}"\n'
    return ""


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address must look like HOST:PORT, got {address!r}")
    return host, int(port)


def _start(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as fh:
        return subprocess.Popen(
            cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-400:] if log_path.exists() else ""
            raise GreentuneError(f"the SuperLink stopped at start (exit {proc.returncode}): {tail}")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.3)
    raise GreentuneError(f"the SuperLink did not listen on {host}:{port} within 60 s")


def _wait_finished(run_dir: RunDir, superlink: subprocess.Popen[bytes]) -> None:
    """``flwr run --stream`` returns when the run ends; the ServerApp has then written its
    status. Wait a little for the file, never for ever."""
    deadline = time.monotonic() + 30
    while run_dir.status == "running" and time.monotonic() < deadline:
        time.sleep(0.5)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """The SuperLink and the processes it started (its own session: also when the SuperLink
    itself has already exited, its children may not have)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_config(cfg: RunConfig, log: Log) -> RunConfig:
    """The config a deployed server runs: the central reference dropped (it would pool the
    clients' data, which a deployment never does)."""
    from greentune.config import replace
    from greentune.privacy.federated.partitions import federation_config, federation_notes

    cfg = federation_config(cfg)
    refs = tuple(r for r in cfg.federated.references if r != "central")
    if refs != cfg.federated.references:
        log("federate: no central reference in a deployment (it would pool the clients' data)")
    cfg = replace(cfg, federated={"references": refs})
    for note in federation_notes(cfg):
        log(f"privacy: {note}")
    return cfg
