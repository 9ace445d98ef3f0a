"""metrics.json of a federated run: pooled rows in ``test``, the rest in ``federated``.

test         federated, local, central, seasonal_naive_daily/weekly: pooled over every
             client's test points (MASE left out: each client has its own scale)
federated    strategy, rounds, rounds_run (fewer under federated.patience), local_steps,
             clients, best_round, val_curve (pooled validation loss per round),
             per_client {client: {row: scores}},
             wins_over_local (clients where federated beats local-only on MAPE), bytes
             (per client and round, each way; the full model's size for comparison),
             privacy (each client's epsilon under client-side DP)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from greentune.config import RunConfig
from greentune.privacy.federated import protocol as P
from greentune.privacy.federated.partitions import federation_notes
from greentune.privacy.federated.results import FEDERATED, LOCAL, SCORES, per_client, pooled
from greentune.privacy.federated.rounds import Outcome
from greentune.privacy.federated.server import Server
from greentune.results import ModelResult, RunMetrics

CENTRAL = "central"


def federated_metrics(
    cfg: RunConfig, outcome: Outcome, server: Server, central: dict[str, dict[str, float]] | None
) -> RunMetrics:
    replies = outcome.test
    per = per_client(replies)
    rows = pooled(replies)
    if central:
        for client, scores in central.items():
            per.setdefault(client, {})[CENTRAL] = {k: v for k, v in scores.items() if k in SCORES}
        rows[CENTRAL] = _pool_central(replies, central)
    windows = sum(int(r.metrics[P.WEIGHT]) for r in replies)
    test = {row: ModelResult(scores, predictions=windows) for row, scores in rows.items()}
    wins = [
        c
        for c, r in per.items()
        if LOCAL in r and r[FEDERATED].get("mape", np.inf) < r[LOCAL].get("mape", np.inf)
    ]
    summary: dict[str, Any] = {
        "strategy": cfg.federated.strategy,
        "rounds": cfg.federated.rounds,
        "rounds_run": int(server.history.rounds[-1]["round"]),
        "local_steps": cfg.federated.local_steps,
        "clients": sorted(per),
        "best_round": server.history.best_round,
        "val_curve": server.history.rounds,
        "per_client": per,
        "wins_over_local": {"clients": sorted(wins), "count": len(wins), "of": len(per)},
        "bytes": _bytes(server),
        "secure_aggregation": cfg.federated.secure_aggregation,
    }
    own = {r.client: r.metrics[P.OWN_WEIGHT] for r in replies if P.OWN_WEIGHT in r.metrics}
    if own:
        summary["personal_skip"] = {
            "own_weight": dict(sorted(own.items())),
            "rule": "each client's frozen skip weights: own_weight x its own ridge + "
            "(1 - own_weight) x the federated ridge, fitted on its validation windows",
        }
    eps = {r.client: r.metrics["epsilon"] for r in replies if "epsilon" in r.metrics}
    if eps:
        summary["privacy"] = {
            "mechanism": "client-side DP-SGD (Opacus), each client's own records",
            "epsilon": eps,
            "delta": {r.client: r.metrics["delta"] for r in replies if "delta" in r.metrics},
            "notes": federation_notes(cfg),
        }
    central_dp = _central_privacy(cfg, len(per), len(server.history.rounds) - 1)
    if central_dp:
        summary["central_privacy"] = central_dp
    return RunMetrics(
        task="forecast",
        model=FEDERATED,
        test=test,
        federated=summary,
        data={"source": cfg.data.path, "windows": {"test": windows}},
    )


def _central_privacy(cfg: RunConfig, clients: int, rounds: int) -> dict[str, Any] | None:
    """Client-level (epsilon, delta) of Flower's server-side fixed clipping over the rounds
    run, from Opacus' RDP accountant with no sampling amplification assumed (Flower samples a
    fixed-size subset, not Poisson: taking q = 1 is the bound that holds)."""
    fed = cfg.federated
    if fed.central_noise_multiplier is None:
        return None
    from greentune.privacy.accounting import epsilon

    delta = fed.central_delta or 1.0 / (10 * clients)
    sigma = fed.central_noise_multiplier
    eps = epsilon([(sigma, 1.0, rounds)], delta, "rdp") if sigma > 0 else float("inf")
    return {
        "mechanism": "central DP: Flower's server-side fixed clipping (Gaussian), per client",
        "unit": "client (all of one utility's data)",
        "noise_multiplier": sigma,
        "clipping_norm": fed.central_clipping_norm,
        "rounds": rounds,
        "sample_rate": 1.0,
        "delta": delta,
        "epsilon": eps,
    }


def _pool_central(replies: list[Any], central: dict[str, dict[str, float]]) -> dict[str, float]:
    weight = {r.client: r.metrics[P.WEIGHT] for r in replies}
    out: dict[str, float] = {}
    for score in SCORES:
        have = [(weight[c], s[score]) for c, s in central.items() if score in s and c in weight]
        if have and score != "mase":
            w = np.asarray([h[0] for h in have])
            out[score] = float(np.sum(w * np.asarray([h[1] for h in have])) / np.sum(w))
    if "mse" in out:
        out["rmse"] = float(np.sqrt(out["mse"]))
    return out


def _bytes(server: Server) -> dict[str, Any]:
    """Bytes of parameter arrays each way per client in the training rounds (under secure
    aggregation: every record of SecAgg+'s four stages, the masked vectors included)."""
    train = [r for r in server.rows if r["extra"]["message"] == "train"]
    sent = [r["extra"]["bytes_sent"] for r in train]
    received = [r["extra"]["bytes_received"] for r in train]
    full = [r for r in server.rows if r["extra"]["message"] == "init"]
    params = server.full_parameters
    return {
        "per_client_round_sent": int(np.median(sent)) if sent else 0,
        "per_client_round_received": int(np.median(received)) if received else 0,
        "total": int(
            sum(r["extra"]["bytes_sent"] + r["extra"]["bytes_received"] for r in server.rows)
        ),
        "full_model_fp32": int(params * 4) if params else None,
        "init_messages": len(full),
    }
