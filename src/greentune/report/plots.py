"""The report's figures, drawn with matplotlib and returned as SVG data URIs: a page that
embeds them needs no network and no script. A figure that does not apply returns None."""

from __future__ import annotations

import base64
import functools
import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from greentune.evaluate.metrics import MAPE_ZERO
from greentune.report.choose import Choice
from greentune.report.collect import RunView

COLOURS = ("#1b7f5a", "#d9822b", "#3a6fb0", "#8a4fa3", "#b03a48", "#5b6770")


STYLE: dict[str, Any] = {
    "svg.fonttype": "none",  # text stays text: smaller files, sharp at any zoom
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def styled(draw: Callable[..., str | None]) -> Callable[..., str | None]:
    """Draw under the report's style without touching the caller's matplotlib settings."""

    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> str | None:
        import matplotlib

        with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]
            return draw(*args, **kwargs)

    return wrapper


def _subplots(*grid: int, figsize: tuple[float, float], **kwargs: Any) -> tuple[Any, Any]:
    """A figure of its own (no pyplot: no global figure list, no backend switch)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kwargs)


def svg_uri(fig: Any) -> str:
    """The figure as an ``data:image/svg+xml`` URI (each figure keeps its own ids)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ----------------------------------------------------------------------------- forecasts


def forecast_chain(pred: pd.DataFrame, row: str, target: str) -> pd.DataFrame:
    """Forecasts of ``row`` for ``target`` from origins that do not overlap, in time order:
    one forecast per test timestamp, as a forecaster would have issued them."""
    p = pred[(pred["model"] == row) & (pred["target"] == target)]
    spans = p.groupby("origin")["time"].agg(["min", "max"]).sort_index()
    kept, last = [], None
    for origin, span in spans.iterrows():
        if last is None or span["min"] > last:
            kept.append(origin)
            last = span["max"]
    return p[p["origin"].isin(kept)].sort_values("time")


FORECAST_COLUMNS = frozenset({"model", "target", "origin", "time", "y_true", "y_pred"})


def _forecasts(view: RunView) -> pd.DataFrame | None:
    """The test predictions when they are forecasts over time (else None)."""
    pred = view.predictions
    if pred is None or pred.empty or not set(pred.columns) >= FORECAST_COLUMNS:
        return None
    return pred


@styled
def forecast_figure(view: RunView) -> str | None:
    """Actuals over the test period, the recommended row's median with its 80 % band, and
    the fine-tuned model's point forecast when it is another row."""
    pred = _forecasts(view)
    if pred is None:
        return None
    target = str(pred["target"].iloc[0])
    shown = [view.recommended]
    if view.metrics.model != view.recommended and view.metrics.model in set(pred["model"].unique()):
        shown.append(view.metrics.model)
    fig, ax = _subplots(figsize=(10, 3.2))
    truth = forecast_chain(pred, shown[0], target)
    ax.plot(truth["time"], truth["y_true"], color="#222222", lw=0.9, label="actual")
    for i, row in enumerate(shown):
        chain = forecast_chain(pred, row, target)
        colour = COLOURS[i]
        if i == 0 and {"q0.1", "q0.9"} <= set(chain.columns) and chain["q0.1"].notna().all():
            ax.fill_between(
                chain["time"],
                chain["q0.1"],
                chain["q0.9"],
                color=colour,
                alpha=0.2,
                lw=0,
                label=f"{row} 80 % band",
            )
        ax.plot(
            chain["time"],
            chain["y_pred"],
            color=colour,
            lw=0.9,
            ls="-" if i == 0 else "--",
            label=row + (" (recommended)" if i == 0 else " (fine-tuned)"),
        )
    ax.set_ylabel(target)
    ax.set_title(f"Test period: forecasts from non-overlapping origins ({target})")
    ax.legend(loc="upper right", fontsize=8, ncols=2)
    fig.autofmt_xdate()
    return svg_uri(fig)


PERCENT_SCORES = ("mape", "smape")


def error_profile(
    p: pd.DataFrame, metric: str, key: pd.Series, mase_scale: float = 1.0
) -> pd.Series:
    """``metric`` (a forecast score of ``evaluate.metrics``) of the prediction rows ``p``
    grouped by ``key``, each group scored as the whole test is."""
    y, err = p["y_true"], p["y_pred"] - p["y_true"]
    if metric == "rmse":
        return (err**2).groupby(key).mean() ** 0.5
    if metric == "mape":
        kept = y.abs() > MAPE_ZERO  # as the score: observed zeros are left out
        return (100 * err.abs() / y.abs())[kept].groupby(key[kept]).mean()
    if metric == "smape":
        denom = (y.abs() + p["y_pred"].abs()).clip(lower=1e-12)
        return (200 * err.abs() / denom).groupby(key).mean()
    mae = err.abs().groupby(key).mean()
    return mae / mase_scale if metric == "mase" else mae


@styled
def error_profile_figure(view: RunView) -> str | None:
    """The run's ranking score (``eval.metric``: MAPE unless set) by hour of day and by day of
    week of the target time, per row (the recommended row, the fine-tuned model and the
    references that are present)."""
    pred = _forecasts(view)
    if pred is None:
        return None
    metric = view.quality.metric
    step = pd.Timedelta((view.metrics.data or {}).get("step") or "1h")
    wanted = [view.recommended, view.metrics.model, "lightgbm", "seasonal_naive_weekly"]
    present = set(pred["model"].unique())
    rows = list(dict.fromkeys(r for r in wanted if r in present))
    panels = [
        (k, f)
        for k, f, fits in (
            ("hour of day", lambda t: t.dt.hour, step < pd.Timedelta("1D")),
            ("day of week", lambda t: t.dt.day_of_week, step < pd.Timedelta("7D")),
        )
        if fits
    ]
    if not panels:
        return None
    fig, axes = _subplots(1, len(panels), figsize=(10, 3), squeeze=False)
    for ax, (name, key) in zip(axes[0], panels, strict=True):
        for i, row in enumerate(rows):
            p = pred[pred["model"] == row]
            scale = 1.0
            if metric == "mase":  # MAE over one scale per run: a row's MAE / MASE gives it back
                scores = view.metrics.test[row].scores if row in view.metrics.test else {}
                if not (scores.get("mae") and scores.get("mase")):
                    continue
                scale = float(scores["mae"]) / float(scores["mase"])
            profile = error_profile(p, metric, key(pd.to_datetime(p["time"])), scale)
            ax.plot(
                profile.index,
                profile.to_numpy(),
                marker="o",
                ms=2.5,
                lw=1,
                color=COLOURS[i % len(COLOURS)],
                label=row,
            )
        ax.set_xlabel(name)
        ax.set_ylabel(metric.upper() + (" %" if metric in PERCENT_SCORES else ""))
        if name == "day of week":
            ax.set_xticks(range(7), ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Test error by time of the forecast target")
    return svg_uri(fig)


# ----------------------------------------------------------------------------- training


@styled
def curves_figure(view: RunView) -> str | None:
    """Training loss per optimizer step and validation loss per validation."""
    t = view.metrics.training
    if t is None or not (t.loss_curve or t.val_curve):
        return None
    fig, (ax1, ax2) = _subplots(1, 2, figsize=(10, 2.8))
    if t.loss_curve:
        loss = np.asarray(t.loss_curve, dtype=float)
        steps = np.arange(1, len(loss) + 1)
        ax1.plot(steps, loss, color=COLOURS[0], lw=0.6, alpha=0.45, label="per step")
        if len(loss) >= 10:
            k = max(len(loss) // 25, 2)
            smooth = pd.Series(loss).rolling(k, min_periods=1).mean()
            ax1.plot(steps, smooth, color=COLOURS[0], lw=1.4, label=f"mean of {k}")
        ax1.set_xlabel("optimizer step")
        ax1.set_ylabel("training loss")
        ax1.legend(fontsize=8)
    if t.val_curve:
        val = pd.DataFrame(t.val_curve)
        ax2.plot(val["step"], val["val_loss"], marker="o", color=COLOURS[1], lw=1.2)
        if t.best_val_loss is not None:
            ax2.axhline(
                t.best_val_loss,
                color="#888888",
                lw=0.8,
                ls=":",
                label=f"best {t.best_val_loss:.4g} (epoch {t.best_epoch})",
            )
            ax2.legend(fontsize=8)
        ax2.set_xlabel("optimizer step (0: before training)")
        ax2.set_ylabel("validation loss")
    fig.suptitle("Training and validation loss")
    return svg_uri(fig)


# ----------------------------------------------------------------------------- energy


@styled
def phases_figure(bills: Sequence[tuple[str, dict[str, float]]]) -> str | None:
    """Energy by phase (Wh), stacked: one bar per run."""
    bills = [(name, phases) for name, phases in bills if phases]
    if not bills:
        return None
    phases = list(dict.fromkeys(p for _, ph in bills for p in ph))
    fig, ax = _subplots(figsize=(10, 0.8 + 0.45 * len(bills)))
    left = np.zeros(len(bills))
    for i, phase in enumerate(phases):
        widths = np.array([ph.get(phase, 0.0) for _, ph in bills])
        ax.barh([n for n, _ in bills], widths, left=left, color=_phase_colour(i), label=phase)
        left += widths
    ax.set_xlabel("energy (Wh)")
    ax.invert_yaxis()
    ax.legend(
        fontsize=8,
        ncols=min(len(phases), 7),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.35 if len(bills) < 3 else -0.12),
        frameon=False,
    )
    ax.set_title("Energy by phase")
    return svg_uri(fig)


def _phase_colour(i: int) -> str:
    palette = (
        "#1b7f5a",
        "#d9822b",
        "#3a6fb0",
        "#8a4fa3",
        "#b03a48",
        "#5b6770",
        "#c2b02f",
        "#2fa7b0",
        "#7a5230",
        "#9aa64a",
    )
    return palette[i % len(palette)]


@styled
def emissions_figure(view: RunView) -> str | None:
    """Cumulative emissions of every metered command over time, with the carbon intensity
    each window was priced at (the trace used)."""
    rows = sorted((r for r in view.ledger.rows if r["depth"] == 0), key=lambda r: r["start"])
    rows = [r for r in rows if r.get("emissions_g") is not None]
    if not rows:
        return None
    ends = pd.to_datetime([r["end"] for r in rows])
    starts = pd.to_datetime([r["start"] for r in rows])
    grams = np.cumsum([r["emissions_g"] for r in rows])
    fig, ax = _subplots(figsize=(10, 2.8))
    ax.step(ends, grams, where="post", color=COLOURS[0], lw=1.4, label="emissions (cumulative)")
    ax.set_ylabel("gCO2e")
    ax2 = ax.twinx()
    intensity = [r.get("intensity_g_per_kwh") for r in rows]
    ax2.hlines(intensity, starts, ends, color=COLOURS[1], lw=2, label="intensity used")
    ax2.set_ylabel("gCO2e/kWh")
    ax2.spines["right"].set_visible(True)
    top = max((i for i in intensity if i is not None), default=1.0)
    ax2.set_ylim(0, top * 1.15)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper left")
    ax.set_title("Emissions over time (every metered command) and the carbon intensity used")
    fig.autofmt_xdate()
    return svg_uri(fig)


@styled
def pareto_figure(choice: Choice) -> str | None:
    """Quality against energy for every row with a bill; the front joined, the
    recommendation starred."""
    rows = [c for c in choice.candidates if c.energy_wh and np.isfinite(choice.judged(c))]
    if not rows:
        return None
    on = set(choice.front)
    fig, ax = _subplots(figsize=(10, 3.6))
    for c in rows:
        colour = COLOURS[0] if c.label in on else "#9aa0a6"
        ax.scatter(c.energy_wh, choice.judged(c), s=22, color=colour, zorder=3)
        ax.annotate(
            c.label,
            (c.energy_wh, choice.judged(c)),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    by = choice.by_label()
    front = [by[label] for label in choice.front]
    if len(front) > 1:
        ax.step(
            [c.energy_wh for c in front],
            [choice.judged(c) for c in front],
            where="post",
            color=COLOURS[0],
            lw=1,
            label="Pareto front",
        )
    chosen = by.get(str(choice.verdict.get("greenest")))
    if chosen is not None:
        ax.scatter(
            chosen.energy_wh,
            choice.judged(chosen),
            marker="*",
            s=180,
            color=COLOURS[1],
            zorder=4,
            label=f"recommended: {chosen.label}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("energy to fit and predict the test split (Wh, log scale)")
    metric = choice.quality.metric
    ax.set_ylabel(f"{choice.chosen_on} {metric}")
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"Quality against energy ({metric} on {choice.chosen_on})")
    return svg_uri(fig)


# ----------------------------------------------------------------------------- classify


@styled
def confusion_figure(view: RunView) -> str | None:
    """The fine-tuned model's confusion matrix (counts; rows true, columns predicted)."""
    m = view.metrics
    result = m.test.get(view.recommended) or m.result
    if not result.confusion or not m.labels:
        return None
    matrix = np.asarray(result.confusion)
    fig, ax = _subplots(figsize=(1.5 + 0.55 * len(m.labels), 1.2 + 0.5 * len(m.labels)))
    ax.imshow(matrix, cmap="Greens")
    ticks = range(len(m.labels))
    ax.set_xticks(ticks, m.labels, rotation=40, ha="right")
    ax.set_yticks(ticks, m.labels)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(count),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if count > matrix.max() / 2 else "black",
        )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    name = view.recommended if view.recommended in m.test else m.model
    ax.set_title(f"Confusion matrix: {name}")
    return svg_uri(fig)


def per_class_f1(confusion: list[list[int]]) -> np.ndarray:
    """F1 per class from a confusion matrix (0 where a class is never true nor predicted)."""
    c = np.asarray(confusion, dtype=float)
    tp = np.diag(c)
    denom = c.sum(axis=0) + c.sum(axis=1)
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


@styled
def f1_figure(view: RunView) -> str | None:
    """F1 per class for every row."""
    m = view.metrics
    rows = {n: r for n, r in m.test.items() if r.confusion}
    if not rows or not m.labels:
        return None
    fig, ax = _subplots(figsize=(10, 2.8))
    width = 0.8 / len(rows)
    x = np.arange(len(m.labels))
    for i, (name, result) in enumerate(rows.items()):
        ax.bar(
            x + i * width,
            per_class_f1(result.confusion or []),
            width,
            color=COLOURS[i % len(COLOURS)],
            label=name,
        )
    ax.set_xticks(x + 0.4 - width / 2, m.labels)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1")
    ax.legend(fontsize=8, ncols=min(len(rows), 4))
    ax.set_title("F1 per class on the test split")
    return svg_uri(fig)


RUN_FIGURES: tuple[tuple[str, Callable[[RunView], str | None]], ...] = (
    ("Forecast against actuals", forecast_figure),
    ("Error by hour and weekday", error_profile_figure),
    ("Confusion matrix", confusion_figure),
    ("F1 per class", f1_figure),
    ("Training", curves_figure),
    ("Emissions over time", emissions_figure),
)
