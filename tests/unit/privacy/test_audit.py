"""The membership-inference attack's arithmetic on losses whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from greentune.privacy.audit import attack, per_sample_losses
from tests.unit.test_loop import Toy, ToyData


def test_members_indistinguishable_from_non_members_give_a_coin_toss():
    rng = np.random.default_rng(0)
    scores = attack(rng.normal(size=2000), rng.normal(size=2000))
    assert scores["auc"] == pytest.approx(0.5, abs=0.03)
    assert scores["tpr_at_1pct_fpr"] < 0.03
    assert scores["empirical_epsilon"] < 0.5


def test_members_with_lower_loss_are_found():
    members, non_members = np.linspace(0, 1, 500), np.linspace(2, 3, 500)
    scores = attack(members, non_members)
    assert scores["auc"] == 1.0 and scores["tpr_at_1pct_fpr"] == 1.0
    assert scores["advantage"] == 1.0
    # 500 of 500 found, 0 of 500 false: Clopper-Pearson 95 % gives TPR >= 0.9926 and
    # FPR <= 0.0074, so ln(0.9926 / 0.0074) = 4.9
    assert scores["empirical_epsilon"] == pytest.approx(4.9, abs=0.05)


def test_delta_lowers_the_empirical_epsilon():
    members, non_members = np.linspace(0, 1, 500), np.linspace(2, 3, 500)
    assert attack(members, non_members, 0.5)["empirical_epsilon"] < 4.3


def test_per_sample_losses_are_each_samples_own_loss():
    model, data = Toy(), ToyData(10)
    idx = np.array([3, 7, 1])
    got = per_sample_losses(model, data, idx, batch_size=2)
    for i, j in enumerate(idx):
        batch = data.get(np.array([j]))
        assert got[i] == pytest.approx(float(model.loss(model(batch), batch)), rel=1e-6)
