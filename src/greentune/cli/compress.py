"""``greentune compress``: build and compare compressed variants of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from greentune.cli.app import app, console, handle_errors, say
from greentune.cli.report import refresh_report
from greentune.energy.base import kind_header
from greentune.errors import ConfigError


@app.command()
@handle_errors
def compress(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    method: Annotated[
        list[str],
        typer.Option(
            "--method",
            "-m",
            help="int8-dynamic, onnx, onnx-int8, prune, prune-layers, distill; options as "
            "NAME:key=value,... (e.g. prune:sparsity=0.7). Repeat for several.",
        ),
    ],
    max_metric_drop: Annotated[
        str | None,
        typer.Option(
            "--max-metric-drop",
            help="Reject a variant whose headline metric (the run's eval.metric, MAPE by "
            "default / macro-F1) is this much worse, relative to the original, e.g. 1%.",
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="Threads for every variant (default: all cores).")
    ] = None,
    rounds: Annotated[int, typer.Option(help="Interleaved timing rounds.")] = 5,
    replace: Annotated[
        bool, typer.Option("--replace", help="Rebuild variants that already exist.")
    ] = False,
    keep_rejected: Annotated[
        bool, typer.Option("--keep-rejected", help="Keep the run of a rejected variant.")
    ] = False,
) -> None:
    """Compress a run into variants (each a run) and compare size, speed, quality and energy.

    Exit code 1 when a variant was rejected by --max-metric-drop or failed; 2 on bad input.
    """
    from greentune.compress import CompressOptions, compress_run
    from greentune.typed import build, parse_fraction

    drop = None if max_metric_drop is None else parse_fraction(max_metric_drop, "--max-metric-drop")
    if drop is not None and drop < 0:
        raise ConfigError(f"--max-metric-drop must be >= 0, got {max_metric_drop!r}")
    opts = build(
        CompressOptions,
        {
            "methods": list(method),
            "max_metric_drop": drop,
            "threads": threads,
            "plan": {"rounds": rounds},
            "replace": replace,
            "keep_rejected": keep_rejected,
        },
        prefix="compress.",
    )
    report = compress_run(run_dir, opts, log=say)
    console.print(compression_table(report))
    bad = [v for v in report["variants"] if v["status"] in ("rejected", "failed")]
    for v in report["variants"]:
        if v["status"] == "rejected":
            console.print(f"  [red]rejected[/] {v['name']}: {v['reason']}", highlight=False)
        elif v["status"] == "failed":
            console.print(f"  [red]failed[/] {v['name']}: {v['error']}", highlight=False)
        else:
            console.print(f"  {v['name']}: {v['run']}", highlight=False)
    console.print(f"  comparison: {Path(report['parent']) / 'compression.json'}", highlight=False)
    refresh_report(Path(report["parent"]))
    if bad:
        raise typer.Exit(code=1)


def compression_table(report: dict[str, Any]) -> Table:
    headline = report["headline"]
    table = Table(title=f"compression of {report['parent']} ({report['threads']} threads)")
    rows = [report["reference"], *report["variants"]]
    kinds = [r.get("energy_kind") for r in rows if r.get("wh_per_1k_predictions")]
    for col in (
        "variant",
        "status",
        "MB",
        "size",
        "params",
        "b1 ms (p95)",
        "b32 ms (p95)",
        "x b1",
        "x b32",
        headline,
        "change",
        kind_header("Wh/1k", kinds),
    ):
        table.add_column(col, justify="left" if col in ("variant", "status") else "right")
    ref = report["reference"]
    for row in [ref, *report["variants"]]:
        if row["status"] == "failed":
            table.add_row(row["name"], "failed", *[""] * 10)
            continue
        wh = row.get("wh_per_1k_predictions")
        table.add_row(
            row["name"],
            row["status"],
            f"{row['size_bytes'] / 1e6:.1f}",
            f"{100 * row.get('size_ratio', 1.0):.0f} %",
            f"{row['parameters'] / 1e6:.2f} M",
            _ms(row["latency_b1_ms"]),
            _ms(row["latency_b32_ms"]),
            f"{row.get('speedup_b1', 1.0):.2f}",
            f"{row.get('speedup_b32', 1.0):.2f}",
            f"{row['metrics'][headline]:.4g}",
            f"{100 * row['metric_drop']:+.2f} %" if "metric_drop" in row else "",
            f"{wh:.3g}" if wh is not None else "-",
        )
    return table


def _ms(stats: dict[str, float]) -> str:
    return f"{stats['median']:.2f} ({stats['p95']:.2f})"
