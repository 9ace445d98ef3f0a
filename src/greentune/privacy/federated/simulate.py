"""``greentune federate CONFIG --simulate``: every client on this machine, Flower's simulation
engine (Ray actors) underneath, the server in this process; a run directory at the end.

The run directory holds config.yaml, metrics.json (per-client and pooled test scores of the
federated model, the local-only and centralised references and the seasonal naives; the rounds'
validation losses; bytes per round), the ledger with one row per client and message (its own
energy, emissions and zone), ``federated/global.npz`` (the chosen trainable weights and the skip
fit) and ``clients/<name>/``: each client's own run directory (the global network with its own
scaler: loadable by ``Predictor``, compressible, servable).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from greentune.config import RunConfig, replace
from greentune.energy.ledger import Ledger
from greentune.energy.session import metered
from greentune.errors import ConfigError, GreentuneError
from greentune.privacy.federated.partitions import (
    client_names,
    federation_config,
    federation_notes,
)
from greentune.privacy.federated.report import federated_metrics
from greentune.privacy.federated.rounds import Outcome, drive
from greentune.privacy.federated.server import Server
from greentune.quiet import quiet_libraries
from greentune.rundir import RunDir
from greentune.train.run import run_logger

Log = Callable[[str], None]
GLOBAL_FILE = "global.npz"


def federate(
    cfg: RunConfig,
    resume: str | os.PathLike[str] | None = None,
    echo: Log = print,
    engine: Callable[[Any, Any, int], object] | None = None,
) -> RunDir:
    """Run (or resume) a simulated federated run; ``engine(server_app, client_app, n)`` runs
    the apps (default: Flower's ``run_simulation``; tests pass an in-process one)."""
    opened = RunDir.open(resume) if resume is not None else None
    if opened is not None:
        saved = opened.config
        if saved.federated.personal_skip is None:  # saved before the default: a pooled start
            saved = replace(saved, federated={"personal_skip": False})
        cfg = federation_config(saved)
        if cfg != saved:
            raise ConfigError(
                f"{opened.path} was started under privacy.dp before a federation made greentune "
                "run's private choices (seasonal skip start, public-range scaling): its "
                "checkpoint belongs to the old start; begin a new run"
            )
    else:
        cfg = federation_config(cfg)
    names = client_names(cfg)  # a bad file or partition fails before a run directory exists
    if unknown := sorted(set(cfg.federated.bounds) - set(names)):
        raise ConfigError(
            f"federated.bounds names {', '.join(unknown)}, not a client of {cfg.data.path} "
            f"({', '.join(names)})"
        )
    run_dir = opened or RunDir.create(cfg)
    lock = run_dir.lock("federate")
    try:
        return _federate(cfg, run_dir, names, resume, echo, engine)
    finally:
        lock.release()


def _federate(
    cfg: RunConfig,
    run_dir: RunDir,
    names: list[str],
    resume: str | os.PathLike[str] | None,
    echo: Log,
    engine: Callable[[Any, Any, int], object] | None,
) -> RunDir:
    log = run_logger(run_dir.log_path, echo)
    run_dir.start(cfg)
    clients_dir = run_dir.path / "clients"
    log(
        f"federate: {len(names)} clients ({', '.join(names)}), {cfg.federated.rounds} rounds of "
        f"{cfg.federated.local_steps} local steps, {cfg.federated.strategy}"
    )
    for note in federation_notes(cfg):
        log(f"privacy: {note}")
    sent_cfg = replace(cfg, train={"threads": cfg.train.threads or 1})
    sink: dict[str, Any] = {}
    try:
        with metered(run_dir.path, cfg.energy, "federate", log) as meter:
            with meter.window("federate"):
                server_app = _server_app(sent_cfg, run_dir.path, len(names), log, resume, sink)
                from greentune.privacy.federated.apps import client_app

                client = client_app({"workdir": str(clients_dir)})
                (engine or _flower_simulation)(server_app, client, len(names))
            if "error" in sink:
                raise sink["error"]
            if "outcome" not in sink:
                raise GreentuneError("the federated run ended without a result; see log.txt")
            outcome: Outcome = sink["outcome"]
            central = None
            if "central" in cfg.federated.references:
                from greentune.privacy.federated.central import central_reference

                with meter.window("reference/central"):
                    central = central_reference(cfg, names, outcome.skip, log)
        conclude(run_dir, cfg, outcome, sink["server"], central)
    except BaseException as exc:
        add_client_rows(run_dir, sink.get("server"))  # energy spent is energy spent
        run_dir.set_status("failed", task=cfg.task, error=str(exc)[:500])
        raise
    return run_dir


def conclude(
    run_dir: RunDir,
    cfg: RunConfig,
    outcome: Outcome,
    server: Server,
    central: dict[str, dict[str, float]] | None = None,
) -> None:
    """The run's results: the chosen weights, the clients' ledger rows, metrics.json, and
    config.yaml with the window shape in steps that the clients resolved (what the config left
    to the data or gave in time: the server never reads the data itself)."""
    _save_global(run_dir.path / "federated" / GLOBAL_FILE, outcome)
    run_dir.write_config(with_shape(cfg, server.shape))
    add_client_rows(run_dir, server)
    run_dir.write_metrics(federated_metrics(cfg, outcome, server, central))
    run_dir.set_status("complete")


def with_shape(cfg: RunConfig, shape: dict[str, int]) -> RunConfig:
    """``cfg`` with the clients' window shape in steps (as ``greentune run`` writes it): what
    the config left to the data or gave in time (``7D``) is now concrete."""
    sections: dict[str, dict[str, int]] = {}
    for key, steps in shape.items():
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = steps
    return replace(cfg, **sections)


def add_client_rows(run_dir: RunDir, server: Server | None) -> None:
    """The clients' rows (their own meters' figures, as they reported them) into the ledger,
    once."""
    if server is None or server.rows_written:
        return
    ledger = Ledger.load(run_dir.path)
    ledger.rows.extend(server.rows)
    clients = sorted(set(server.history.clients.values()))
    ledger.sessions.append(
        {"command": "federate", "clients": clients, "rows": "client-*: each client's own meter"}
    )
    ledger.save(run_dir.path)
    server.rows_written = True


def _server_app(
    cfg: RunConfig, path: Path, n: int, log: Log, resume: Any, sink: dict[str, Any]
) -> Any:
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def main(grid: Any, context: Any) -> None:
        logging.getLogger("flwr").setLevel(logging.WARNING)  # our log says what each round did
        server = Server(grid, cfg, path, n, log)
        sink["server"] = server
        try:
            sink["outcome"] = drive(server, resume=resume is not None)
        except BaseException as exc:  # the simulation logs and swallows it: keep it for us
            sink["error"] = exc

    return app


def _flower_simulation(server_app: Any, client_app: Any, n: int) -> None:
    """Flower's simulation engine: one Ray actor per core, each client in one thread."""
    from flwr.simulation import run_simulation

    cores = max(1, len(os.sched_getaffinity(0)))
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    quiet_libraries()
    logging.getLogger("flwr").setLevel(logging.ERROR)  # our log says what each round did
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=n,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {
                "num_cpus": cores,
                "include_dashboard": False,
                "logging_level": "error",
                "log_to_driver": False,
            },
        },
    )


def _save_global(path: Path, outcome: Outcome) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    payload: dict[str, Any] = {
        **{f"trainable/{k}": v for k, v in outcome.best.items()},
        **{f"skip/{k}": v for k, v in outcome.skip.items()},
    }
    np.savez(tmp, **payload)
    tmp.replace(path)
