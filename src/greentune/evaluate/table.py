"""Comparison tables: the model and every baseline side by side, as rich tables."""

from __future__ import annotations

import math
from typing import Any

from rich.markup import escape
from rich.table import Table

from greentune.energy.base import kind_header

FORECAST_COLUMNS = (
    ("mae", "MAE", "{:.4g}"),
    ("rmse", "RMSE", "{:.4g}"),
    ("mape", "MAPE %", "{:.2f}"),
    ("smape", "sMAPE %", "{:.2f}"),
    ("mase", "MASE", "{:.3f}"),
    ("pinball", "pinball", "{:.4g}"),
    ("coverage", "cover80 %", "{:.1f}"),
    ("fit_s", "fit s", "{:.1f}"),
    ("energy_wh", "Wh", "{:.3g}"),
    ("emissions_g", "gCO2e", "{:.3g}"),
)


def energy_headers(results: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """The Wh and gCO2e column headers, with how the rows' energy was obtained (measured,
    model, estimated or mixed): a modelled figure never reads as a measured one."""
    kinds = [r.get("energy_kind") for r in results.values() if _finite(r.get("energy_wh"))]
    return kind_header("Wh", kinds), kind_header("gCO2e", kinds)


LABELS = {"mape": "MAPE", "smape": "sMAPE", "mase": "MASE", "mae": "MAE", "rmse": "RMSE"}
"""How a ranking score (``eval.metric``) is named in sentences."""


def forecast_table(
    results: dict[str, dict[str, Any]],
    model: str,
    title: str,
    start: str | None = None,
    metric: str = "mape",
) -> Table:
    """Rows sorted by ``metric`` (``eval.metric``); the best value of each error column in
    bold green; the network's starting point (``start``) labelled, so its change against that
    start can be read."""
    table = Table(title=title)
    table.add_column("model")
    wh, grams = energy_headers(results)
    for key, header, _ in FORECAST_COLUMNS:
        header = {"energy_wh": wh, "emissions_g": grams}.get(key, header)
        table.add_column(header, justify="right")
    best = {
        key: min((r[key] for r in results.values() if _finite(r.get(key))), default=None)
        for key in ("mae", "rmse", "mape", "smape", "mase", "pinball")
    }
    for name, row in sorted(results.items(), key=lambda kv: _rank(kv[1].get(metric))):
        cells = []
        for key, _, fmt in FORECAST_COLUMNS:
            value = row.get(key)
            text = fmt.format(value) if _finite(value) else "–"
            cells.append(
                f"[bold green]{text}[/]" if value is not None and value == best.get(key) else text
            )
        label = f"[bold]{name}[/] (fine-tuned)" if name == model else name
        table.add_row(label + (" (the network's start)" if name == start else ""), *cells)
    return table


def verdict(
    results: dict[str, dict[str, float]],
    model: str,
    start: str | None = None,
    metric: str = "mape",
) -> list[str]:
    """Plain sentences: how the fine-tuned model compares with each baseline on ``metric``
    (``eval.metric``), its own starting point (``start``) first: what fine-tuning itself
    added."""
    label = LABELS.get(metric, metric)
    ours = results[model].get(metric, math.nan)
    lines = []
    order = sorted(results, key=lambda n: n != start)  # the start first, then as given
    for name in order:
        row = results[name]
        if name == model:
            continue
        theirs = row.get(metric, math.nan)
        if not _finite(theirs):
            lines.append(f"{name}: no {label} to compare")
            continue
        if not _finite(ours):
            continue
        if not theirs > 0:  # a perfect baseline: no ratio to state
            lines.append(f"{name} has {label} {_value(metric, theirs)}")
            continue
        change = 100.0 * (ours - theirs) / theirs
        word = "lower" if change < 0 else "higher"
        whose = " (its starting point: what fine-tuning changed)" if name == start else ""
        lines.append(f"{model} {label} is {abs(change):.1f} % {word} than {name}{whose}")
    best = min(results, key=lambda k: _rank(results[k].get(metric)))
    if best != model and _finite(results[best].get(metric)):
        lines.append(
            f"best on the test split: {best} ({label} {_value(metric, results[best][metric])}), "
            "not the fine-tuned model"
        )
    return lines


SERIES_SHOWN = 20
"""A run over hundreds of series prints its first ones; metrics.json's ``by_target`` has all."""


def series_table(
    by_target: dict[str, dict[str, dict[str, float]]],
    rows: list[str],
    metric: str = "mape",
    recommended: str | None = None,
) -> Table:
    """``metric`` per target (the columns ``rows``, those scored; ``recommended`` labelled),
    the best per target in bold green: how each series of a many-series run fares, which the
    pooled table hides."""
    rows = [r for r in dict.fromkeys(rows) if r in by_target]
    targets = list(by_target[rows[0]]) if rows else []
    label = LABELS.get(metric, metric) + (" %" if metric in ("mape", "smape") else "")
    shown = targets[:SERIES_SHOWN]
    more = (
        f", the first {SERIES_SHOWN} of {len(targets)} (all in metrics.json)"
        if shown != targets
        else ""
    )
    table = Table(title=f"test {label} per series{more}")
    table.add_column("series")
    for row in rows:
        table.add_column(row + (" (recommended)" if row == recommended else ""), justify="right")
    for target in shown:
        values = [by_target[r].get(target, {}).get(metric) for r in rows]
        best = min((float(v) for v in values if v is not None and _finite(v)), default=None)
        fmt = "{:.2f}" if metric in ("mape", "smape") else "{:.4g}"
        cells = [
            f"[bold green]{_fmt(v, fmt)}[/]" if v is not None and v == best else _fmt(v, fmt)
            for v in values
        ]
        table.add_row(escape(target), *cells)
    return table


def _rank(value: Any) -> float:
    """Sort key: a missing or NaN score after every number."""
    return float(value) if _finite(value) else math.inf


def _value(metric: str, value: float) -> str:
    """A score as the table shows it: percent for MAPE and sMAPE, 4 digits otherwise."""
    return f"{value:.2f} %" if metric in ("mape", "smape") else f"{value:.4g}"


def classification_table(results: dict[str, dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for header in ("model", "accuracy", "macro-F1", "fit s", *energy_headers(results)):
        table.add_column(header, justify="right" if header != "model" else "left")
    for name, row in results.items():
        table.add_row(
            name,
            f"{row['accuracy']:.4f}",
            f"{row['macro_f1']:.4f}",
            f"{row.get('fit_s', 0.0):.1f}",
            *(_fmt(row.get(k), "{:.3g}") for k in ("energy_wh", "emissions_g")),
        )
    return table


def energy_lines(metrics: dict[str, Any]) -> list[str]:
    """What the run cost, and the greenest model within the quality target."""
    e = metrics.get("energy")
    if not e:
        return []
    kinds = "/".join(e["kinds"])
    grams = e["run_g"]
    lines = [
        f"energy ({kinds}): {e['run_wh']:.3g} Wh"
        + (f", {grams:.3g} gCO2e" if _finite(grams) else "")
        + f" for the whole run; intensity: {e['carbon']}"
    ]
    if e.get("greenest"):
        rows = metrics["test"]
        green, best, key = e["greenest"], e["best"], e["quality_metric"]
        target = 100 * e["target"]
        on = e.get("chosen_on") or "test"
        scores = (metrics.get("validation") or rows) if on == "validation" else rows
        label = f"{key} on {on}"
        if green == best:
            lines.append(
                f"greenest within {target:g} % of the best {label}: {best}, the best itself"
            )
        else:
            ratio = e["energy_ratio_to_best"]
            lines.append(
                f"greenest within {target:g} % of the best {label} ({best}, "
                f"{scores[best][key]:.4g}): {green} ({key} {scores[green][key]:.4g}, "
                f"{rows[green]['energy_wh']:.3g} Wh"
                + (f" ({rows[green]['energy_kind']})" if rows[green].get("energy_kind") else "")
                + (f", {ratio:.2g}x the best's energy" if ratio is not None else "")
                + ")"
            )
        if on == "validation" and green in rows:  # a variant's rows carry other names
            lines.append(f"recommended: {green}, test {key} {rows[green][key]:.4g}")
    return lines


def _fmt(value: Any, fmt: str) -> str:
    return fmt.format(value) if _finite(value) else "–"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
