"""``greentune federate``: federated fine-tuning across clients with Flower (docs/federate.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from greentune.cli.app import app, console, handle_errors, say
from greentune.cli.commands import split_args
from greentune.config import RunConfig, load_config
from greentune.errors import ConfigError, GreentuneError


@app.command()
@handle_errors
def federate(
    args: Annotated[
        list[str] | None,
        typer.Argument(help="CONFIG.yaml [section.key=value ...]"),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="A wide file (a column per client), a long file with "
            "--partition-col, or a folder with a file per client.",
        ),
    ] = None,
    time_col: Annotated[str | None, typer.Option("--time-col", help="Timestamp column.")] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="Value column of a long file or of the files.")
    ] = None,
    partition_col: Annotated[
        str | None, typer.Option("--partition-col", help="A long file's client column.")
    ] = None,
    clients: Annotated[
        str | None, typer.Option("--clients", help="Clients taking part, comma-separated.")
    ] = None,
    rounds: Annotated[int | None, typer.Option("--rounds", help="Federated rounds.")] = None,
    local_steps: Annotated[
        int | None, typer.Option("--local-steps", help="Optimizer steps per client and round.")
    ] = None,
    strategy: Annotated[
        str | None, typer.Option("--strategy", help="fedavg, fedprox or fedadam.")
    ] = None,
    simulate: Annotated[
        bool,
        typer.Option(
            "--simulate/--no-simulate",
            help="Every client on this machine (default); --no-simulate = server.",
        ),
    ] = True,
    engine: Annotated[
        str,
        typer.Option(
            help="ray: Flower's simulation engine (an actor per core); inline: the "
            "clients one after another in this process (no Ray)."
        ),
    ] = "ray",
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue this federated run directory.")
    ] = None,
    expect: Annotated[
        int | None, typer.Option("--expect", help="server: how many clients to wait for.")
    ] = None,
    address: Annotated[
        str, typer.Option("--address", help="server: where the SuperLink listens.")
    ] = "127.0.0.1:8000",
    server: Annotated[
        str | None, typer.Option("--server", help="client: the server's HOST:PORT.")
    ] = None,
    partition: Annotated[
        str | None, typer.Option("--partition", help="client: its name or index in the data.")
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="client: where it keeps its own run.")
    ] = None,
    carbon: Annotated[
        str | None, typer.Option("--carbon", help="client: its grid's carbon provider.")
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="server/client: plain HTTP, no TLS.")
    ] = False,
    ssl_certfile: Annotated[str | None, typer.Option(help="server: TLS certificate.")] = None,
    ssl_keyfile: Annotated[str | None, typer.Option(help="server: TLS private key.")] = None,
    ssl_ca_certfile: Annotated[str | None, typer.Option(help="server: TLS CA certificate.")] = None,
    root_certificates: Annotated[
        str | None, typer.Option(help="client: the CA certificate to trust.")
    ] = None,
    node_auth: Annotated[
        bool, typer.Option("--node-auth", help="server: only registered client keys may join.")
    ] = False,
    node_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--node-key", help="server: a client's public key to register (repeat per client)."
        ),
    ] = None,
    auth_key: Annotated[
        Path | None,
        typer.Option("--auth-key", help="client: its private key file for node auth."),
    ] = None,
) -> None:
    """Train one model across clients whose data never leaves them (Flower).

    greentune federate CONFIG --data FILE_OR_FOLDER      every client on this machine
    greentune federate server CONFIG --expect 3 ...     a SuperLink + the server
    greentune federate client --partition K --server HOST:PORT --data FILE   one client

    Each client keeps its own chronological split and scaler; only the trainable (PEFT)
    parameters travel. Writes a run directory: pooled and per-client test scores against
    local-only and centralised training, each client's energy and emissions in the ledger,
    and each client's own loadable run under clients/.
    """
    from greentune.privacy.federated.simulate import federate as run_federated

    role = args[0] if args else None
    if role in ("server", "client"):
        args = (args or [])[1:]
    if role == "client":
        _client(
            args, partition, server, data, workdir, carbon, insecure, root_certificates, auth_key
        )
        return
    if engine not in ("ray", "inline"):
        raise ConfigError(f"--engine must be ray or inline, got {engine!r}")
    config, overrides = split_args(args)
    flags = {
        "data.path": data,
        "data.time_col": time_col,
        "data.target": target,
        "federated.partition_col": partition_col,
        "federated.clients": f"[{clients}]" if clients else None,
        "federated.rounds": rounds,
        "federated.local_steps": local_steps,
        "federated.strategy": strategy,
    }
    if data:
        flags["data.source"] = "parquet" if Path(data).suffix == ".parquet" else "csv"
    overrides += [f"{k}={v}" for k, v in flags.items() if v is not None]
    cfg = load_config(config, overrides)
    if role == "server" or not simulate:
        certs = {
            "ssl-certfile": ssl_certfile,
            "ssl-keyfile": ssl_keyfile,
            "ssl-ca-certfile": ssl_ca_certfile,
        }
        _server(cfg, expect, address, insecure, certs, node_auth, node_key or [], resume)
        return
    chosen = None
    if engine == "inline":
        from greentune.privacy.federated.inline import run_inline

        chosen = run_inline
    run = run_federated(cfg, resume=resume, echo=say, engine=chosen)
    _print(run)


def _server(
    cfg: RunConfig,
    expect: int | None,
    address: str,
    insecure: bool,
    certs: dict[str, str | None],
    node_auth: bool,
    node_keys: list[Path],
    resume: Path | None,
) -> None:
    from greentune.privacy.federated.deploy import serve, server_config, tls_args
    from greentune.privacy.federated.nodeauth import check_public_keys
    from greentune.rundir import RunDir

    if not expect or expect < 2:
        raise ConfigError(
            "greentune federate server needs --expect N: the clients (>= 2) to "
            "wait for (the server never reads the data, so it cannot count them)"
        )
    security = tls_args(insecure, certs)
    if node_keys and not node_auth:
        raise ConfigError("--node-key registers keys for node authentication: add --node-auth")
    if node_auth and insecure:
        raise ConfigError(
            "--node-auth needs TLS (Flower authenticates nodes over TLS only): give "
            "--ssl-certfile, --ssl-keyfile and --ssl-ca-certfile instead of --insecure"
        )
    check_public_keys(node_keys)  # every file, before anything starts
    run = RunDir.open(resume) if resume else None
    cfg = server_config(run.config if run else cfg, say)
    run = run or RunDir.create(cfg)
    with run.lock("federate"):
        run.start(cfg)
        serve(run, expect, security, address, resume is not None, say, node_auth, node_keys)
    if run.status != "complete":
        raise GreentuneError(
            f"the federated run stopped: {run.info.error or run.status} "
            f"(see {run.log_path}); continue with --resume {run.path}"
        )
    _print(run)


def _client(
    args: list[str] | None,
    partition: str | None,
    server: str | None,
    data: str | None,
    workdir: Path | None,
    carbon: str | None,
    insecure: bool,
    root_certificates: str | None,
    auth_key: Path | None,
) -> None:
    from greentune.privacy.federated.deploy import join, tls_args

    if args:
        raise ConfigError("greentune federate client takes no config: the server sends it")
    if partition is None or not server:
        raise ConfigError(
            "greentune federate client needs --partition NAME_OR_INDEX and --server HOST:PORT"
        )
    security = tls_args(insecure, {"root-certificates": root_certificates})
    if auth_key is not None and insecure:
        raise ConfigError(
            "--auth-key needs TLS (Flower authenticates nodes over TLS only): give "
            "--root-certificates instead of --insecure"
        )
    node = {
        "data-path": str(Path(data).resolve()) if data else "",
        "workdir": str((workdir or Path("federate-client")).resolve()),
        "carbon": carbon or "",
    }
    raise typer.Exit(join(partition, server, security, node, say, auth_key))


def _print(run: object) -> None:
    from greentune.rundir import RunDir

    assert isinstance(run, RunDir)
    metrics = run.metrics
    fed = metrics.federated or {}
    per = fed.get("per_client", {})
    rows = list(metrics.test)
    table = Table(title=f"test MAPE % per client ({run.path})")
    table.add_column("client")
    for row in rows:
        table.add_column(row, justify="right")
    for client, scores in per.items():
        table.add_row(client, *[_fmt(scores.get(r, {}).get("mape")) for r in rows])
    table.add_row("pooled", *[_fmt(metrics.test[r].scores.get("mape")) for r in rows])
    console.print(table)
    wins = fed.get("wins_over_local", {})
    sent = fed.get("bytes", {})
    line = (
        f"best round {fed.get('best_round')}; federated beats local-only on "
        f"{wins.get('count', 0)} of {wins.get('of', 0)} clients; "
        f"{sent.get('per_client_round_sent', 0):,} bytes to each client per round"
    )
    if sent.get("full_model_fp32"):
        line += f" ({100 * sent['per_client_round_sent'] / sent['full_model_fp32']:.2f} % of "
        line += "the full model)"
    console.print(line, highlight=False)
    privacy = fed.get("privacy")
    if privacy:
        eps = ", ".join(f"{c} {e:.3g}" for c, e in privacy["epsilon"].items())
        console.print(f"client-side DP: epsilon {eps}", highlight=False)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"
