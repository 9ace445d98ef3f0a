"""``greentune report`` (an HTML page of finished runs) and ``greentune recommend`` (the
greenest row within a target of the best, over several runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from greentune.cli.app import app, console, handle_errors
from greentune.energy.base import kind_header

if TYPE_CHECKING:
    from greentune.report import Choice

Runs = Annotated[list[Path], typer.Argument(help="Finished run directories.")]


@app.command()
@handle_errors
def report(
    runs: Runs,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="The HTML file (default: RUN/report.html for one run, ./report.html for several).",
        ),
    ] = None,
) -> None:
    """Write one self-contained HTML report (no network needed) of one or several runs."""
    from greentune.report import write_report

    path = write_report(runs, out)
    size_kb = path.stat().st_size / 1024
    console.print(f"wrote [bold]{path}[/] ({size_kb:,.0f} KB)", highlight=False)


def refresh_report(run_dir: Path) -> None:
    """Write a run's report.html again after a command changed the run (compress adds its
    variants; ensemble makes a new run), unless the run's config says eval.report: false. A
    report that cannot be drawn is one warning line: the command's work is done."""
    from greentune.errors import GreentuneError
    from greentune.report import write_report
    from greentune.rundir import RunDir

    try:
        if not RunDir(run_dir).config.eval.report:
            return
        path = write_report([run_dir])
    except (GreentuneError, OSError, ValueError) as exc:
        console.print(f"  report.html not written ({exc}); greentune report {run_dir}")
        return
    console.print(f"  report: {path}", highlight=False)


@app.command()
@handle_errors
def recommend(
    runs: Runs,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="Quality distance from the best that is good enough, e.g. 2% (default: the "
            "first run's energy.target).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the choice as JSON.")] = False,
) -> None:
    """The greenest model within the target of the best, among every row of the runs
    (models, baselines, ensembles), chosen on validation when every row has a score there."""
    from greentune.config import parse_target
    from greentune.report import recommend
    from greentune.rundir import RunDir

    tolerance = parse_target(target or RunDir.open(runs[0]).config.energy.target)
    choice = recommend(runs, tolerance)
    if as_json:
        console.print_json(json.dumps(_as_dict(choice)))
        return
    console.print(_table(choice), highlight=False)
    for line in verdict_lines(choice):
        console.print(line, highlight=False)


def _as_dict(choice: Choice) -> dict[str, object]:
    return {
        **choice.verdict,
        "front": choice.front,
        "rows": [
            {
                "label": c.label,
                "run": c.run,
                "row": c.row,
                f"val_{choice.quality.metric}": c.val,
                f"test_{choice.quality.metric}": c.test,
                "energy_wh": c.energy_wh,
                "emissions_g": c.emissions_g,
                "energy_kind": c.energy_kind,
            }
            for c in choice.candidates
        ],
    }


def _table(choice: Choice) -> Table:
    metric = choice.quality.metric
    table = Table(title=f"every row, by {choice.chosen_on} {metric}")
    kinds = [c.energy_kind for c in choice.candidates if c.energy_wh is not None]
    wh, grams = kind_header("Wh", kinds), kind_header("gCO2e", kinds)
    for header in ("row", f"val {metric}", f"test {metric}", wh, grams, "front"):
        table.add_column(header, justify="left" if header == "row" else "right")
    green = choice.verdict.get("greenest")
    for c in choice.ordered():
        cells = [
            c.label,
            _fmt(c.val),
            _fmt(c.test),
            _fmt(c.energy_wh),
            _fmt(c.emissions_g),
            "yes" if c.label in choice.front else "",
        ]
        style = "bold green" if c.label == green else None
        table.add_row(*cells, style=style)
    return table


def verdict_lines(choice: Choice) -> list[str]:
    """The verdict in sentences."""
    v = choice.verdict
    if not v:
        return [
            "no row has an energy bill (runs made with energy.enabled=false): nothing to recommend"
        ]
    by, metric = choice.by_label(), choice.quality.metric
    best, green = by[v["best"]], by[v["greenest"]]
    lines = [
        f"best on {choice.chosen_on}: {best.label} ({metric} {_fmt(choice.judged(best))})",
        f"recommended: {green.label}, the greenest within {100 * v['target']:.3g} % of the best "
        f"on {choice.chosen_on} ({metric} {_fmt(choice.judged(green))}; test {metric} "
        f"{_fmt(green.test)}, scored once)",
    ]
    ratio = v.get("energy_ratio_to_best")
    if ratio is not None and green.label != best.label:
        lines.append(f"it costs {ratio:.2f}x the energy of {best.label}")
    if choice.chosen_on == "test":
        lines.append("chosen on test scores: some rows have no validation score")
    return lines


def _fmt(value: float | None) -> str:
    if value is None or value != value:
        return "–"
    return f"{value:.4g}"
