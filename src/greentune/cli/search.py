"""``greentune search``: an energy-aware hyper-parameter search (Optuna, two objectives)."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from greentune.cli.app import app, console, handle_errors, say
from greentune.energy.base import kind_header, kind_of

SEARCH_SCHEMA_VERSION = 1

if TYPE_CHECKING:
    from greentune.search import SearchResult


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handle_errors
def search(
    ctx: typer.Context,
    config: Annotated[
        str, typer.Argument(help="The base config (YAML), or 'default' for the built-in demo.")
    ],
    space: Annotated[Path, typer.Argument(help="The search space (YAML): key -> range.")],
    trials: Annotated[
        int, typer.Option("--trials", help="Finished trials the study should hold.")
    ] = 20,
    budget_wh: Annotated[
        float | None,
        typer.Option("--budget-wh", help="Stop starting trials once the study spent this much."),
    ] = None,
    target: Annotated[
        str, typer.Option("--target", help="Recommend the greenest trial within this of the best.")
    ] = "2%",
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="Optuna storage URL shared by workers (default: sqlite:///<output_dir>/<study>/"
            "study.db).",
        ),
    ] = None,
    study: Annotated[
        str | None, typer.Option("--study", help="Study name (default: search-<space>).")
    ] = None,
    sampler: Annotated[str, typer.Option(help="nsga2, tpe or random.")] = "nsga2",
    seed: Annotated[int, typer.Option(help="The sampler's seed.")] = 0,
    prune: Annotated[
        bool,
        typer.Option("--prune/--no-prune", help="Stop trials behind the median at equal energy."),
    ] = True,
    with_default: Annotated[
        bool,
        typer.Option("--default/--no-default", help="Run the config's own values as trial 0."),
    ] = True,
) -> None:
    """Search a config's settings for the front of validation quality against energy.

    Extra KEY=VALUE arguments override the base config (e.g. train.epochs=3)."""
    from greentune.config import parse_target
    from greentune.search import SearchOptions
    from greentune.search import search as run_search

    opts = SearchOptions(
        space=space,
        trials=trials,
        config=None if config == "default" else Path(config),
        overrides=tuple(ctx.args),
        budget_wh=budget_wh,
        target=parse_target(target),
        storage=storage,
        study=study,
        sampler=sampler,
        seed=seed,
        prune=prune,
        with_default=with_default,
    )
    result = run_search(opts, log=say)
    console.print(_table(result), highlight=False)
    for line in verdict(result):
        console.print(line, highlight=False)
    out = _write(result)
    console.print(f"study: {result.storage}\nsummary: {out}", highlight=False)


def _table(result: SearchResult) -> Table:
    keys = list(dict.fromkeys(k for t in result.trials for k in t.params))
    table = Table(title=f"study {result.study}: {len(result.trials)} trials")
    wh = kind_header("Wh", (t.energy_kind for t in result.trials))
    for header in ("trial", "state", *keys, result.metric, wh, "front"):
        table.add_column(header, justify="left" if header in ("state", *keys) else "right")
    front = set(result.front)
    for t in result.trials:
        style = "bold green" if t.number == result.greenest else None
        cells = [
            str(t.number) + (" (default)" if t.number == result.default else ""),
            t.state.lower() + (f" (= {t.repeat_of})" if t.repeat_of is not None else ""),
            *(_fmt(t.params.get(k)) for k in keys),
            _fmt(t.value),
            _fmt(t.energy_wh),
            "yes" if t.number in front else "",
        ]
        table.add_row(*cells, style=style)
    return table


def verdict(result: SearchResult) -> list[str]:
    """The recommendation in sentences."""
    best, green = result.row(result.best), result.row(result.greenest)
    if best is None or green is None:
        return ["no trial finished: nothing to recommend"]
    lines = [
        f"best on validation: trial {best.number} ({result.metric} {_fmt(best.value)}, "
        f"{_fmt(best.energy_wh)} Wh)",
        f"recommended: trial {green.number}, the greenest within {100 * result.target:.3g} % of "
        f"the best ({result.metric} {_fmt(green.value)}, {_fmt(green.energy_wh)} Wh; test "
        f"{_fmt(green.test)}, scored once): {green.run}",
    ]
    default = result.row(result.default)
    if default is not None and default.number == green.number:
        lines.append(
            f"the default configuration (trial {default.number}) is itself the greenest within "
            f"{100 * result.target:.3g} % of the best: no trial searched saves energy at that "
            "quality"
        )
    elif default is not None and default.energy_wh and green.energy_wh:
        ratio = default.energy_wh / green.energy_wh
        how = f"{ratio:.2f}x less energy" if ratio >= 1 else f"{1 / ratio:.2f}x more energy"
        lines.append(
            f"against the default configuration (trial {default.number}: {result.metric} "
            f"{_fmt(default.value)}, {_fmt(default.energy_wh)} Wh): {how}"
        )
    cheaper = result.row(result.cheaper)
    if cheaper is not None and cheaper.value is not None and cheaper.energy_wh and best.value:
        saving = (green.energy_wh or 0.0) / cheaper.energy_wh
        # rounded up: a target of this size admits it
        gap = math.ceil(1000 * abs(cheaper.value - best.value) / abs(best.value)) / 10
        lines.append(
            f"next on the front: trial {cheaper.number} ({result.metric} {_fmt(cheaper.value)}, "
            f"{gap:g} % from the best, {_fmt(cheaper.energy_wh)} Wh): {saving:.2f}x less energy "
            "than the recommended"
        )
    kind = kind_of(t.energy_kind for t in result.trials)
    spent = f"{result.spent_wh:.3g} Wh" + (f" ({kind})" if kind else "")
    lines.append(f"the search spent {spent}, every trial's whole run")
    return lines


def _write(result: SearchResult) -> Path:
    """search.json beside the trials, and search.html (the report of the front, the default
    and the recommendation)."""
    from greentune.io import write_json
    from greentune.report import write_report

    root = Path(result.root)
    out = root / "search.json"
    write_json(out, {"schema_version": SEARCH_SCHEMA_VERSION, **asdict(result)})
    chosen = {result.greenest, result.best, result.default, *result.front} - {None}
    pages = [r.run for r in result.trials if r.number in chosen and r.run]
    pages = [p for p in pages if (Path(p) / "metrics.json").is_file()]
    if pages:
        write_report(pages, root / "search.html")
    return out


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "–" if value is None else str(value)
