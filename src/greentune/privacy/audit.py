"""``greentune privacy audit``: a membership-inference attack on a run's model, beside its
epsilon. Evidence of what an attacker can learn, not a proof of privacy.

The attack is the loss threshold of Yeom et al. (CSF 2018): a sample the model was trained on
tends to have a lower loss. Members are training samples, non-members held-out ones the model
never trained on (the test texts; for forecasts the validation and test windows, which lie
later in time, so a drift of the series alone can move the AUC: see docs/privacy.md).
From the attack's true- and false-positive rates, Clopper-Pearson 95 % bounds give an
empirical epsilon (as Jagielski et al., NeurIPS 2020, do over many trained models). From one
model whose samples are not independent trials it is a heuristic, not a valid lower bound.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from greentune.errors import CheckpointError
from greentune.rundir import RunDir

AUDIT_FILE = "privacy-audit.json"
CONFIDENCE = 0.95


@dataclass
class AuditResult:
    run: str
    task: str
    attack: str
    members: int
    non_members: int
    non_members_from: str
    auc: float
    """Area under the attack's ROC curve: 0.5 is a coin toss."""
    tpr_at_1pct_fpr: float
    """Members found when 1 % of non-members are wrongly called members."""
    advantage: float
    """max(TPR - FPR) over thresholds (Yeom et al.'s membership advantage)."""
    empirical_epsilon: float
    """ln(TPR / FPR) at the best threshold with 95 % Clopper-Pearson bounds (0: none shown);
    a heuristic from one model, not a proof of a lower bound."""
    member_loss_median: float
    non_member_loss_median: float
    epsilon: float | None
    """The run's DP epsilon (None: trained without DP)."""
    delta: float | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def per_sample_losses(
    model: Any, batches: Any, idx: np.ndarray, batch_size: int = 64
) -> np.ndarray:
    """The model's loss on each sample of ``idx``, one value per sample."""
    out: list[float] = []
    with torch.no_grad():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            batch = batches.get(chunk)
            pred = model(batch)
            for i in range(len(chunk)):
                one = {k: v[i : i + 1] for k, v in batch.items()}
                out.append(float(model.loss(pred[i : i + 1], one)))
    return np.asarray(out)


def attack(
    member_losses: np.ndarray, non_member_losses: np.ndarray, delta: float = 0.0
) -> dict[str, float]:
    """Loss-threshold attack: AUC, TPR at 1 % FPR, advantage, epsilon lower bound."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.r_[np.ones(len(member_losses)), np.zeros(len(non_member_losses))]
    score = -np.r_[member_losses, non_member_losses]  # lower loss: more likely a member
    fpr, tpr, _ = roc_curve(y, score)
    within = fpr <= 0.01
    return {
        "auc": float(roc_auc_score(y, score)),
        "tpr_at_1pct_fpr": float(tpr[within].max()) if within.any() else 0.0,
        "advantage": float(np.max(tpr - fpr)),
        "empirical_epsilon": empirical_epsilon(
            tpr, fpr, len(member_losses), len(non_member_losses), delta
        ),
    }


def empirical_epsilon(
    tpr: np.ndarray, fpr: np.ndarray, n_members: int, n_non: int, delta: float
) -> float:
    """max over thresholds of ln((TPR_low - delta) / FPR_high), with Clopper-Pearson bounds
    at ``CONFIDENCE`` (both sides of the attack's decision: members and non-members)."""
    from scipy.stats import beta

    alpha = 1 - CONFIDENCE
    best = 0.0
    for t, f in zip(tpr, fpr, strict=True):
        for a, b, n_a, n_b in ((t, f, n_members, n_non), (1 - f, 1 - t, n_non, n_members)):
            hits, false = round(a * n_a), round(b * n_b)
            low = beta.ppf(alpha / 2, hits, n_a - hits + 1) if hits > 0 else 0.0
            high = beta.ppf(1 - alpha / 2, false + 1, n_b - false) if false < n_b else 1.0
            if low - delta > 0 and high > 0:
                best = max(best, math.log((low - delta) / high))
    return best


def audit(run: RunDir, samples: int = 1000, seed: int = 0, batch_size: int = 64) -> AuditResult:
    """Attack ``run``'s model with up to ``samples`` members and as many non-members."""
    from greentune.tasks import TASKS

    t0 = time.perf_counter()
    metrics = run.metrics
    task = TASKS.get(run.config.task)
    loaded = task.load_for_compression(run)
    model = loaded.model.eval()
    rng = np.random.default_rng(seed)
    train = loaded.batches["train"]
    held = task.audit_held_out
    pools = [(name, loaded.batches[name]) for name in held]
    n_held = sum(len(b) for _, b in pools)
    m = min(samples, len(train), n_held)
    if m < 10:
        raise CheckpointError(
            f"{run}: {len(train)} training and {n_held} held-out samples: an attack needs at "
            "least 10 of each"
        )
    members = per_sample_losses(model, train, rng.choice(len(train), m, replace=False), batch_size)
    # non-members drawn from the held-out splits in proportion to their sizes
    chosen = np.sort(rng.choice(n_held, m, replace=False))
    parts, offset = [], 0
    for _, batches in pools:
        mine = chosen[(chosen >= offset) & (chosen < offset + len(batches))] - offset
        if len(mine):
            parts.append(per_sample_losses(model, batches, mine, batch_size))
        offset += len(batches)
    non_members = np.concatenate(parts)
    privacy = metrics.privacy or {}
    delta = privacy.get("delta")
    scores = attack(members, non_members, float(delta or 0.0))
    return AuditResult(
        run=str(run.path),
        task=loaded.task,
        attack="loss threshold (Yeom et al. 2018)",
        members=len(members),
        non_members=len(non_members),
        non_members_from=f"{' and '.join(held)} {task.privacy_unit}s",
        member_loss_median=float(np.median(members)),
        non_member_loss_median=float(np.median(non_members)),
        epsilon=privacy.get("epsilon"),
        delta=delta,
        seconds=time.perf_counter() - t0,
        **scores,
    )
