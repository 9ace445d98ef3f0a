"""The typer application, its sub-apps, consoles and the error handler every command uses."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from greentune.errors import GreentuneError
from greentune.quiet import quiet_libraries

__all__ = ["app", "handle_errors", "quiet_libraries"]

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="greentune",
    help="Fine-tune pretrained transformers for demand forecasting and text classification.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect data before a run.", no_args_is_help=True)
config_app = typer.Typer(help="Show resolved configs.", no_args_is_help=True)
energy_app = typer.Typer(help="Measure energy and carbon.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(energy_app, name="energy")
app.add_typer(config_app, name="config")

# Comparison tables need ~120 columns; rich assumes 80 when output is not a terminal.
console = Console() if sys.stdout.isatty() else Console(width=140)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=200)


def say(message: str) -> None:
    """One log line on screen as written: a column such as ``load[mw]`` is not rich markup."""
    console.print(message, highlight=False, markup=False)


def handle_errors(fn: F) -> F:
    """GreentuneError -> one red line on stderr and exit code 2; never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (GreentuneError, OSError) as exc:  # OSError: a path that cannot be read/written
            if isinstance(exc, OSError) and exc.filename:
                from greentune.io import is_write_error, storage_error

                if is_write_error(exc):  # one line naming the file and what to do
                    exc = storage_error(Path(exc.filename), exc)
            from rich.markup import escape

            # escaped: a message may hold brackets that are not markup ("load.csv [zone=ME]")
            said = escape(str(exc))
            err_console.print(f"[bold red]error:[/] {said}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]
