"""The report page: one self-contained HTML file (inline CSS, figures as data URIs, no script,
no network), for one run or several."""

from __future__ import annotations

import datetime as dt
import math
from html import escape
from typing import Any

from greentune.energy.base import kind_header
from greentune.report import plots
from greentune.report.choose import Choice
from greentune.report.collect import RunView, described

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2327;
background:#f6f7f5}
main{max-width:1080px;margin:0 auto;padding:1rem 1.5rem 3rem}
header{background:#1b5e44;color:#fff;padding:1rem 1.5rem}
header h1{margin:0;font-size:1.4rem} header p{margin:.2rem 0 0;opacity:.85;font-size:.85rem}
section{background:#fff;border:1px solid #dde2de;border-radius:6px;padding:1rem 1.2rem;
margin:1rem 0}
h2{font-size:1.2rem;margin:.2rem 0 .8rem} h3{font-size:1rem;margin:1.2rem 0 .4rem}
.cards{display:flex;flex-wrap:wrap;gap:.6rem;margin:.6rem 0}
.card{flex:1 1 180px;border:1px solid #dde2de;border-radius:6px;padding:.5rem .7rem}
.card b{display:block;font-size:.75rem;color:#5b6770;font-weight:600;text-transform:uppercase}
.card span{font-size:1.05rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem .9rem;font-size:.88rem}
dt{color:#5b6770} dd{margin:0}
table{border-collapse:collapse;font-size:.82rem;margin:.4rem 0;width:100%}
th,td{padding:.25rem .5rem;border-bottom:1px solid #e6e9e6;text-align:right}
th:first-child,td:first-child{text-align:left} th{background:#f0f3f0}
tr.chosen td{background:#fff4e5;font-weight:600}
figure{margin:.8rem 0} figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:.8rem;color:#5b6770}
.note{font-size:.85rem;color:#5b6770}
"""


def page(views: list[RunView], choice: Choice | None, note: str | None = None) -> str:
    """The whole page: a comparison of the runs when there are several (``choice`` over their
    rows, or ``note`` saying why there is none), then one section per run."""
    from greentune import __version__

    title = views[0].name if len(views) == 1 else f"{len(views)} runs"
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>greentune report: {escape(title)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>greentune report: {escape(title)}</h1>",
        f"<p>written {now} by greentune {escape(__version__)}</p></header><main>",
    ]
    if len(views) > 1:
        parts.append(_comparison(views, choice, note))
    for view in views:
        parts.append(_run_section(view, single=len(views) == 1))
    parts.append("</main></body></html>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- several runs


def _comparison(views: list[RunView], choice: Choice | None, note: str | None) -> str:
    out = ['<section id="compare"><h2>Runs compared</h2>']
    if choice is None:
        out.append(f'<p class="note">{escape(note or "")}</p>')
    else:
        out.append(_verdict(choice))
        out.append(
            _figure(
                plots.pareto_figure(choice),
                "Quality against energy",
                "Every row of every run; the front is what no other row beats on "
                "both quality and energy.",
            )
        )
        out.append(_choice_table(choice))
    bills = [(v.name, (v.metrics.energy.by_phase_wh if v.metrics.energy else {})) for v in views]
    out.append(_figure(plots.phases_figure(bills), "Energy by phase", "Each run's own phases."))
    out.append("</section>")
    return "\n".join(out)


def _verdict(choice: Choice) -> str:
    v = choice.verdict
    if not v:
        return (
            '<p class="note">No row has an energy bill (runs made with energy.enabled=false): '
            "no recommendation.</p>"
        )
    by = choice.by_label()
    best, green = by[v["best"]], by[v["greenest"]]
    metric = choice.quality.metric
    ratio = v.get("energy_ratio_to_best")
    saving = f", {ratio:.2f}x the best row's energy" if ratio is not None else ""
    return (
        f"<p>Best on {escape(choice.chosen_on)}: <b>{escape(best.label)}</b> "
        f"({metric} {_num(choice.judged(best))}). Recommended, the greenest within "
        f"{100 * v['target']:.3g} % of it: <b>{escape(green.label)}</b> ({choice.chosen_on} "
        f"{metric} {_num(choice.judged(green))}, test {metric} {_num(green.test)}{saving}).</p>"
    )


def _choice_table(choice: Choice) -> str:
    metric = choice.quality.metric
    kinds = [c.energy_kind for c in choice.candidates if c.energy_wh is not None]
    head = [
        "row",
        f"validation {metric}",
        f"test {metric}",
        kind_header("Wh", kinds),
        kind_header("gCO2e", kinds),
        "front",
    ]
    rows = []
    green = choice.verdict.get("greenest")
    on = set(choice.front)
    for c in choice.ordered():
        cells = [
            c.label,
            _num(c.val),
            _num(c.test),
            _num(c.energy_wh),
            _num(c.emissions_g),
            "yes" if c.label in on else "",
        ]
        rows.append((cells, c.label == green))
    return _table(head, rows)


# ----------------------------------------------------------------------------- one run


def _run_section(view: RunView, single: bool) -> str:
    out = [f'<section class="run" id="run-{escape(view.name)}"><h2>Run {escape(view.name)}</h2>']
    out.append(_cards(view))
    out.append(
        "<dl>"
        + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in described(view))
        + "</dl>"
    )
    out.append("<h3>Every model on the same test split</h3>")
    out.append(_model_table(view))
    if view.metrics.by_target:
        out.append(f"<h3>Each series on its own (test {escape(view.quality.metric)})</h3>")
        out.append(_series_table(view))
    from greentune.report.choose import choose

    if single:
        energy = view.metrics.energy
        target = energy.target if energy and energy.target is not None else 0.02
        choice = choose([view], target)
        out.append(
            _figure(
                plots.pareto_figure(choice),
                "Quality against energy",
                "The front: rows no other row beats on both quality and energy.",
            )
        )
        by_phase = view.metrics.energy.by_phase_wh if view.metrics.energy else {}
        out.append(
            _figure(
                plots.phases_figure([(view.name, by_phase)]),
                "Energy by phase",
                "The latest run session's top-level windows.",
            )
        )
    for title, draw in plots.RUN_FIGURES:
        out.append(_figure(draw(view), title, ""))
    if view.compression:
        out.append("<h3>Compressed variants</h3>")
        out.append(_compression_table(view.compression))
    out.append("</section>")
    return "\n".join(out)


def _cards(view: RunView) -> str:
    m, e = view.metrics, view.metrics.energy
    key = view.quality.metric
    cards = []
    best = e.best if e and e.best in m.test else m.model
    cards.append(("best model", f"{best} ({key} {_num(m.test[best].score(key))} test)"))
    if e and e.greenest in m.test:
        ratio = e.energy_ratio_to_best
        extra = f", {ratio:.2f}x the best's energy" if ratio is not None else ""
        cards.append(
            (
                f"greenest within {100 * (e.target or 0):.3g} %",
                f"{e.greenest} ({key} {_num(m.test[e.greenest].score(key))}{extra})",
            )
        )
    if e:
        grams = f", {_num(e.run_g)} gCO2e" if e.run_g is not None else ""
        cards.append(("run energy", f"{_num(e.run_wh)} Wh{grams} ({', '.join(e.kinds)})"))
        if e.chosen_on:
            cards.append(("chosen on", f"{e.chosen_on} scores"))
    else:
        cards.append(("energy", "not metered (energy.enabled=false)"))
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><b>{escape(k)}</b><span>{escape(v)}</span></div>' for k, v in cards
        )
        + "</div>"
    )


SCORE_COLUMNS = (
    ("mape", "MAPE %"),
    ("smape", "sMAPE %"),
    ("mae", "MAE"),
    ("rmse", "RMSE"),
    ("mase", "MASE"),
    ("pinball", "pinball"),
    ("coverage", "cover80 %"),
    ("accuracy", "accuracy"),
    ("macro_f1", "macro-F1"),
)
"""Scores shown when some row has them; of sMAPE, MAE and RMSE only the one the run ranks by
(``eval.metric``), beside MAPE, MASE and the interval scores (classify: the last two)."""
OPTIONAL = ("smape", "mae", "rmse")


def _model_table(view: RunView) -> str:
    m = view.metrics
    key = view.quality.metric
    columns = [
        c
        for c in SCORE_COLUMNS
        if any(c[0] in r.scores for r in m.test.values()) and (c[0] not in OPTIONAL or c[0] == key)
    ]
    val = m.validation or {}
    kinds = [r.bill.energy_kind for r in m.test.values() if r.bill]
    energy = (kind_header("Wh", kinds), kind_header("gCO2e", kinds))
    head = ["model", f"val {key}", *(h for _, h in columns), "fit s", *energy]
    rows = []
    for name, r in sorted(m.test.items(), key=lambda kv: _rank(kv[1].score(key), view)):
        label = name + (" (fine-tuned)" if name == m.model else "")
        bill = r.bill
        cells = [
            label,
            _num((val.get(name) or {}).get(key)),
            *(_num(r.scores.get(k)) for k, _ in columns),
            _num(r.fit_s),
            _num(bill.energy_wh if bill else None),
            _num(bill.emissions_g if bill else None),
        ]
        rows.append((cells, name == view.recommended))
    note = '<p class="note">Highlighted: the row the run recommends.</p>'
    return _table(head, rows) + note


def _series_table(view: RunView) -> str:
    """A run over several targets: each row's score on each target alone (``by_target``),
    the rows in the model table's order."""
    m, key = view.metrics, view.quality.metric
    by_target = m.by_target or {}
    ranked = sorted(m.test, key=lambda n: _rank(m.test[n].score(key), view))
    names = [n for n in ranked if n in by_target]
    targets = list(by_target[names[0]]) if names else []
    rows = [
        ([t, *(_num((by_target[n].get(t) or {}).get(key)) for n in names)], False) for t in targets
    ]
    note = f'<p class="note">The first table pools the {len(targets)} series.</p>'
    return _table(["series", *names], rows) + note


def _rank(value: float, view: RunView) -> float:
    if not math.isfinite(value):
        return math.inf
    return -value if view.quality.higher_is_better else value


def _compression_table(report: dict[str, Any]) -> str:
    metric = str(report.get("headline", "metric"))
    listed = [report.get("reference") or {}, *(report.get("variants") or [])]
    kinds = [r.get("energy_kind") for r in listed if r.get("wh_per_1k_predictions")]
    head = ["variant", "status", "MB", "b1 ms", "b32 ms", metric, "change %"]
    head.append(kind_header("Wh/1k", kinds))
    rows = []
    for row in listed:
        if not row:
            continue
        drop = row.get("metric_drop")
        cells = [
            str(row.get("name")),
            str(row.get("status")),
            _num((row.get("size_bytes") or 0) / 1e6),
            _num((row.get("latency_b1_ms") or {}).get("median")),
            _num((row.get("latency_b32_ms") or {}).get("median")),
            _num((row.get("metrics") or {}).get(metric)),
            _num(100 * drop if isinstance(drop, int | float) else None),
            _num(row.get("wh_per_1k_predictions")),
        ]
        rows.append((cells, False))
    return _table(head, rows)


# ----------------------------------------------------------------------------- pieces


def _table(head: list[str], rows: list[tuple[list[str], bool]]) -> str:
    out = ["<table><thead><tr>", *(f"<th>{escape(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for cells, chosen in rows:
        out.append('<tr class="chosen">' if chosen else "<tr>")
        out.extend(f"<td>{escape(c)}</td>" for c in cells)
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _figure(uri: str | None, title: str, caption: str) -> str:
    if uri is None:
        return ""
    text = escape(title) + (f": {escape(caption)}" if caption else "")
    return (
        f'<figure><img src="{uri}" alt="{escape(title)}" loading="eager">'
        f"<figcaption>{text}</figcaption></figure>"
    )


def _num(value: Any) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}" if magnitude >= 1e4 else f"{value:.1f}"
    return f"{value:.4g}"
