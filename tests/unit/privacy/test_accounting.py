"""The accountant against published values; calibration and the step limit are exact."""

from __future__ import annotations

import math

import pytest

from greentune.config import DPConfig
from greentune.errors import ConfigError
from greentune.privacy.accounting import Budget, calibrate, default_delta, epsilon, max_steps


def test_abadi_et_al_example_is_bounded_by_the_moments_accountant():
    # Abadi et al. (CCS 2016), section 3.1: q = 0.01, sigma = 4, delta = 1e-5, T = 10,000 steps
    # give epsilon ~ 1.26 with the moments accountant; RDP is the same analysis, tighter.
    eps = epsilon([(4.0, 0.01, 10_000)], 1e-5, "rdp")
    assert 1.0 < eps <= 1.26
    assert epsilon([(4.0, 0.01, 10_000)], 1e-5, "prv") <= eps


def test_opacus_reference_value():
    # Opacus' own regression value: sigma 1.5, q 0.04, 90 epochs (2,250 steps), delta 1e-5
    assert epsilon([(1.5, 0.04, 2250)], 1e-5, "rdp") == pytest.approx(7.32911117143, rel=1e-6)


def test_no_noise_means_no_guarantee_and_no_steps_cost_nothing():
    assert epsilon([(0.0, 0.1, 5)], 1e-5) == math.inf
    assert epsilon([], 1e-5) == 0.0


def test_calibrate_meets_the_target_to_one_percent():
    sigma = calibrate(3.0, 1e-5, 0.01, 2000, "rdp")
    assert epsilon([(sigma, 0.01, 2000)], 1e-5) <= 3.0
    assert epsilon([(sigma * 0.98, 0.01, 2000)], 1e-5) > 3.0


def test_max_steps_is_the_last_step_within_the_budget():
    t = max_steps(2.0, 1e-5, 1.0, 0.02, "rdp")
    assert epsilon([(1.0, 0.02, t)], 1e-5) <= 2.0 < epsilon([(1.0, 0.02, t + 1)], 1e-5)


def test_delta_default_and_refusal():
    assert default_delta(1000) == pytest.approx(1e-4)
    budget = Budget.plan(DPConfig(target_epsilon=8.0), 1000, 0.032, 100)
    assert budget.delta == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match=r"delta=0.001 is not below 1/n = 0.001 for 1000"):
        Budget.plan(DPConfig(target_epsilon=8.0, delta=1e-3), 1000, 0.032, 100)


def test_spend_merges_steps_and_stops_at_the_limit():
    budget = Budget.plan(DPConfig(target_epsilon=2.0, noise_multiplier=2.0), 1000, 0.05, 10)
    assert budget.limit_steps is not None and budget.limit_steps > 0
    for _ in range(budget.limit_steps):
        assert not budget.exhausted()
        budget.spend()
    assert budget.exhausted() and budget.history == [(2.0, 0.05, budget.limit_steps)]
    assert budget.epsilon() <= 2.0
