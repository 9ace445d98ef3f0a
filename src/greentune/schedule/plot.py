"""The plan as a picture: intensity per site over the window and each job's chunks.

``plot_png`` writes a matplotlib PNG; ``plot_html`` writes one self-contained HTML file (the
PNG inlined as base64 and the plan's table), so it opens anywhere without a server.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from pathlib import Path
from typing import Any

from greentune.io import write_text

__all__ = ["plot_html", "plot_png"]


def _figure_bytes(plan: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    start = dt.datetime.fromisoformat(plan["grid_start"])
    slot = dt.timedelta(seconds=plan["slot_s"])
    jobs = plan["jobs"]
    fig, (top, bottom) = plt.subplots(
        2,
        1,
        figsize=(11, 3 + 0.35 * len(jobs)),
        sharex=True,
        gridspec_kw={"height_ratios": [2, max(1, 0.35 * len(jobs))]},
    )
    colours = {}
    for k, (name, site) in enumerate(plan["sites"].items()):
        colours[name] = f"C{k}"
        values = site["forecast_g_per_kwh"]
        times = [start + i * slot for i in range(len(values) + 1)]
        top.step(
            times, [*values, values[-1]], where="post", color=f"C{k}", label=f"{name} forecast"
        )
        actual = site["actual_g_per_kwh"]
        if any(v is not None for v in actual):
            filled = [float("nan") if v is None else v for v in actual]
            top.step(
                times,
                [*filled, filled[-1]],
                where="post",
                color=f"C{k}",
                ls=":",
                lw=1,
                label=f"{name} actual",
            )
    top.set_ylabel("gCO2e/kWh")
    top.legend(loc="upper right", fontsize=8)
    top.set_title(f"policy {plan['policy']}, forecast {plan['forecast']}")
    for row_i, job in enumerate(jobs):
        y = len(jobs) - 1 - row_i
        for chunk in job["chunks"]:
            a = dt.datetime.fromisoformat(chunk["start"])
            b = dt.datetime.fromisoformat(chunk["end"])
            bottom.barh(y, b - a, left=a, height=0.6, color=colours[job["site"]])
        deadline = dt.datetime.fromisoformat(job["deadline"])
        bottom.plot([deadline, deadline], [y - 0.4, y + 0.4], color="red", lw=2)
    bottom.set_yticks(range(len(jobs)), [j["name"] for j in reversed(jobs)])
    bottom.set_xlabel("UTC (red: deadline)")
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def plot_png(plan: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(_figure_bytes(plan))
    tmp.replace(path)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if isinstance(value, float) else html.escape(str(value))


def plot_html(plan: dict[str, Any], path: Path) -> None:
    png = base64.b64encode(_figure_bytes(plan)).decode()
    head = ("job", "status", "site", "chunks", "energy_wh", "expected_g", "run_now_g", "actual_g")
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{_cell(len(j['chunks']) if k == 'chunks' else j.get(k))}</td>"
            for k in (
                "name",
                "status",
                "site",
                "chunks",
                "energy_wh",
                "expected_g",
                "run_now_g",
                "actual_g",
            )
        )
        + "</tr>"
        for j in plan["jobs"]
    )
    totals = plan["totals"]
    text = (
        "<!doctype html><meta charset='utf-8'><title>greentune schedule</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}</style>"
        f"<h1>Schedule: {html.escape(plan['job_file'])}</h1>"
        f"<p>policy {html.escape(plan['policy'])}, forecast {html.escape(plan['forecast'])}; "
        f"expected {_cell(totals['expected_g'])} g against {_cell(totals['run_now_g'])} g "
        f"run now (saving {_cell(totals['saving_pct'])} %)</p>"
        f"<img alt='timeline' src='data:image/png;base64,{png}'>"
        "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + f"</tr>{rows}</table>"
    )
    write_text(path, text)
