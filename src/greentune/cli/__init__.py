"""Command line: typer commands that parse, load the config and call one function each."""

from __future__ import annotations

from greentune.cli.app import (
    app,
    config_app,
    console,
    data_app,
    energy_app,
    err_console,
    handle_errors,
    quiet_libraries,
)

__all__ = [
    "app",
    "config_app",
    "console",
    "data_app",
    "energy_app",
    "err_console",
    "handle_errors",
    "main",
    "quiet_libraries",
]


def main() -> None:
    # importing the command modules registers their commands on ``app``
    from greentune.cli import (  # noqa: F401
        commands,
        compress,
        federate,
        privacy,
        report,
        schedule,
        search,
        serve,
    )

    quiet_libraries()
    app(prog_name="greentune")


if __name__ == "__main__":  # pragma: no cover
    main()
