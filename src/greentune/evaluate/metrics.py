"""Point and probabilistic forecast metrics, and classification metrics.

Forecast arrays are (windows, horizon, targets) in data units. MAPE and sMAPE are in percent.
MASE divides MAE by the in-sample MAE of the seasonal naive forecast on the training rows.
"""

from __future__ import annotations

import numpy as np

MAPE_ZERO = 1e-12
"""Observed values at or below this |value| are left out of MAPE (it would divide by them)."""


def mase_scale(train_values: np.ndarray, season_length: int) -> float:
    """Mean absolute seasonal difference of the training series (all targets pooled)."""
    v = np.asarray(train_values, dtype=float)
    if v.ndim == 1:
        v = v[:, None]
    if len(v) <= season_length:
        raise ValueError(f"MASE needs more than {season_length} training rows, got {len(v)}")
    diff = np.abs(v[season_length:] - v[:-season_length])
    scale = float(np.nanmean(diff))
    return scale if scale > 0 else 1.0


def point_metrics(y: np.ndarray, yhat: np.ndarray, scale: float) -> dict[str, float]:
    err = yhat - y
    abs_err = np.abs(err)
    denom = np.abs(y)
    nonzero = denom > MAPE_ZERO
    return {
        "mae": float(abs_err.mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "mse": float((err**2).mean()),
        "mape": float(100.0 * (abs_err[nonzero] / denom[nonzero]).mean())
        if nonzero.any()
        else float("nan"),
        "smape": float(
            100.0 * (2.0 * abs_err / np.maximum(np.abs(y) + np.abs(yhat), 1e-12)).mean()
        ),
        "mase": float(abs_err.mean() / scale),
    }


def pinball_loss(y: np.ndarray, quantiles: dict[float, np.ndarray]) -> float:
    """Mean pinball (quantile) loss over all quantiles, as scored in GEFCom."""
    losses = []
    for q, pred in quantiles.items():
        diff = y - pred
        losses.append(np.maximum(q * diff, (q - 1.0) * diff).mean())
    return float(np.mean(losses))


def interval_coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of observations inside [lower, upper], in percent."""
    return float(100.0 * ((y >= lower) & (y <= upper)).mean())


def forecast_metrics(
    y: np.ndarray,
    point: np.ndarray,
    scale: float,
    quantiles: dict[float, np.ndarray] | None = None,
) -> dict[str, float]:
    out = point_metrics(y, point, scale)
    if quantiles:
        out["pinball"] = pinball_loss(y, quantiles)
        lo, hi = min(quantiles), max(quantiles)
        out["coverage"] = interval_coverage(y, quantiles[lo], quantiles[hi])
        out["interval"] = round(100.0 * (hi - lo), 6)
    return out


def classification_metrics(y: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, object]:
    """Accuracy, macro-F1 and the confusion matrix (rows: true class, columns: predicted)."""
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(confusion, (y, pred), 1)
    return {**confusion_scores(confusion), "confusion": confusion.tolist()}


def confusion_scores(confusion: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 of a confusion matrix (rows: true class, columns: predicted); a
    class never predicted nor present scores F1 0, as scikit-learn's ``zero_division=0``."""
    tp = np.diag(confusion).astype(float)
    precision = np.divide(
        tp, confusion.sum(axis=0), out=np.zeros_like(tp), where=confusion.sum(axis=0) > 0
    )
    recall = np.divide(
        tp, confusion.sum(axis=1), out=np.zeros_like(tp), where=confusion.sum(axis=1) > 0
    )
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(tp),
        where=(precision + recall) > 0,
    )
    return {"accuracy": float(tp.sum() / max(confusion.sum(), 1)), "macro_f1": float(f1.mean())}
