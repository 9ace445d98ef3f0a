"""``greentune serve RUN`` and ``greentune serve keys add | list | revoke`` (docs/serve.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperGroup

from greentune.cli.app import app, console, handle_errors


class RunOrCommand(TyperGroup):
    """``greentune serve RUN ...`` means ``greentune serve start RUN ...``; ``keys`` stays a
    sub-command."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer's vendored click
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["start", *args]
        return super().parse_args(ctx, args)


serve_app = typer.Typer(
    cls=RunOrCommand,
    help="Serve a run's model over HTTP (greentune serve RUN), and manage API keys.",
    no_args_is_help=True,
)
keys_app = typer.Typer(help="API keys: stored hashed, each with scopes.", no_args_is_help=True)
serve_app.add_typer(keys_app, name="keys")
app.add_typer(serve_app, name="serve")

KeysOpt = Annotated[
    Path | None,
    typer.Option(
        "--keys",
        help="Key file (default $GREENTUNE_SERVE_KEYS or ~/.config/greentune/).",
        show_default=False,
    ),
]


def _parse_masks(items: list[str] | None) -> dict[str, str]:
    from greentune.errors import ConfigError

    out = {}
    for item in items or []:
        name, sep, pattern = item.partition("=")
        if not sep or not name or not pattern:
            raise ConfigError(f"--mask {item!r}: write NAME=REGEX, e.g. nmi='\\bVIC\\d{{8}}\\b'")
        out[name] = pattern
    return out


@serve_app.command("start")
@handle_errors
def start(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    variant: Annotated[
        str | None, typer.Option(help="fp32 (default), int8-dynamic, onnx-int8 or a variant name.")
    ] = None,
    row: Annotated[
        str | None,
        typer.Option(
            help="Serve this row of a forecasting run's table instead of its network: a "
            "baseline, an ensemble (ensemble-weighted, ...) or 'recommended'."
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to bind (0.0.0.0 in a container).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Processes, each with its own model.")] = 1,
    keys: KeysOpt = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve without API keys (local tests only).")
    ] = False,
    max_batch_size: Annotated[
        int, typer.Option(help="Predictions per forward pass (1: no batching).")
    ] = 32,
    max_wait_ms: Annotated[float, typer.Option(help="Wait for a batch to fill, in ms.")] = 5.0,
    queue_size: Annotated[int, typer.Option(help="Waiting requests before 503.")] = 256,
    timeout_s: Annotated[float, typer.Option(help="Per-request deadline (504 after it).")] = 30.0,
    max_body_bytes: Annotated[int, typer.Option(help="Larger bodies get 413.")] = 2_000_000,
    max_items: Annotated[int, typer.Option(help="Most texts or windows per request.")] = 256,
    rate: Annotated[float, typer.Option(help="Requests per second per key.")] = 50.0,
    burst: Annotated[int, typer.Option(help="Token-bucket size per key.")] = 100,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option("--cors-origin", help="Allow this origin (CORS is off by default)."),
    ] = None,
    mask: Annotated[
        list[str] | None, typer.Option("--mask", help="Extra personal-data pattern NAME=REGEX.")
    ] = None,
    mask_inputs: Annotated[
        bool, typer.Option("--mask-inputs", help="Mask personal data before the model sees it.")
    ] = False,
    ssl_certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM).")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    no_energy: Annotated[bool, typer.Option("--no-energy", help="Do not meter.")] = False,
) -> None:
    """Serve RUN's model over HTTP (greentune serve RUN is short for this).

    Routes: POST /v1/forecast or /v1/classify, GET /v1/models, /healthz, /readyz, /metrics,
    POST /admin/reload (also on SIGHUP). SIGTERM drains, then writes the service's energy to
    the run's ledger (phase serve)."""
    from greentune.serve.server import serve
    from greentune.serve.settings import ServeSettings

    settings = ServeSettings(
        run=str(run_dir),
        variant=variant,
        row=row,
        host=host,
        port=port,
        workers=workers,
        keys_file=str(keys) if keys else None,
        auth=not no_auth,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        queue_size=queue_size,
        timeout_s=timeout_s,
        max_body_bytes=max_body_bytes,
        max_items=max_items,
        rate_per_s=rate,
        burst=burst,
        cors_origins=tuple(cors_origin or ()),
        mask_inputs=mask_inputs,
        mask_patterns=_parse_masks(mask),
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        energy=not no_energy,
    )
    serve(settings)


def _store(keys: Path | None) -> Any:
    from greentune.serve.keys import KeyStore
    from greentune.serve.settings import default_keys_file

    return KeyStore(keys or default_keys_file())


@keys_app.command("add")
@handle_errors
def keys_add(
    name: Annotated[str, typer.Argument(help="Who the key is for (shown in logs and lists).")],
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help="forecast, classify or admin (repeat).")
    ],
    keys: KeysOpt = None,
) -> None:
    """Create a key; it is printed once and stored only as a salted scrypt hash."""
    store = _store(keys)
    token, record = store.add(name, scope)
    console.print(
        f"key [bold]{record.id}[/] for {name} ({', '.join(record.scopes)}):", highlight=False
    )
    print(token)
    console.print(f"stored hashed in {store.path}; it cannot be shown again", highlight=False)


@keys_app.command("list")
@handle_errors
def keys_list(keys: KeysOpt = None) -> None:
    """Keys with their scopes (never the keys themselves)."""
    store = _store(keys)
    table = Table("id", "name", "scopes", "created", "revoked", title=str(store.path))
    for rec in store.records():
        row = rec.public()
        table.add_row(
            row["id"], row["name"], ", ".join(row["scopes"]), row["created"], row["revoked"] or ""
        )
    console.print(table)


@keys_app.command("revoke")
@handle_errors
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's id or name.")], keys: KeysOpt = None
) -> None:
    """Revoke a key; running services stop accepting it within a second."""
    rec = _store(keys).revoke(key)
    console.print(f"revoked {rec.id} ({rec.name})", highlight=False)
