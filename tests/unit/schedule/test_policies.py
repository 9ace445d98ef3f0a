"""Policies on synthetic traces whose optimum is known (or found by brute force)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from greentune.schedule.policies import (
    POLICIES,
    Choice,
    Infeasible,
    Request,
    SiteView,
    best_chunks,
    place,
)

# Two days of hourly slots: a valley at 02:00-05:00 each night, a dip at 13:00 (105).
DAY = np.array(
    [
        300,
        250,
        100,
        90,
        95,
        110,
        280,
        300,
        320,
        330,
        310,
        300,
        250,
        105,
        260,
        300,
        320,
        340,
        350,
        330,
        320,
        310,
        300,
        290,
    ],
    float,
)
TWO_DAYS = np.concatenate([DAY, DAY + 5])


def view(values=TWO_DAYS, free=None):
    return {"home": SiteView(np.asarray(values, float), free)}


def test_run_now_starts_at_once():
    out = POLICIES.get("run-now")(Request("a", 6, 30, 3), view())
    assert out == Choice("home", ((6, 9),), 280 + 300 + 320)


def test_lowest_window_finds_the_night_valley():
    out = POLICIES.get("lowest-window")(Request("a", 6, 40, 3), view())
    # day 2's 02:00-05:00 (105+95+100) is the lowest 3-slot window from slot 6 on
    assert out == Choice("home", ((26, 29),), 105 + 95 + 100)


def test_greenest_chunks_takes_the_lowest_slots():
    req = Request("a", 0, 24, 4, interruptible=True, min_chunk=1)
    out = POLICIES.get("greenest-chunks")(req, view())
    assert isinstance(out, Choice)
    assert out.runs == ((2, 5), (13, 14))
    assert out.cost == 100 + 90 + 95 + 105


def test_min_chunk_forces_longer_runs():
    req = Request("a", 0, 24, 4, interruptible=True, min_chunk=2)
    out = POLICIES.get("greenest-chunks")(req, view())
    assert out.runs == ((2, 6),)  # 100+90+95+110 = 395; a 3+1 split is not allowed
    assert out.cost == 395


def test_non_interruptible_job_is_shifted_not_chunked():
    req = Request("a", 0, 24, 4, interruptible=False)
    assert POLICIES.get("greenest-chunks")(req, view()) == POLICIES.get("lowest-window")(
        req, view()
    )


@pytest.mark.parametrize("seed", range(25))
def test_best_chunks_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 11))
    cost = rng.integers(1, 50, n).astype(float)
    usable = rng.random(n) > 0.2
    k = int(rng.integers(1, n + 1))
    m = int(rng.integers(1, 4))
    best = math.inf
    for combo in itertools.combinations(range(n), k):
        if not all(usable[i] for i in combo):
            continue
        runs, prev = [], None
        for i in combo:
            if prev is not None and i == prev + 1:
                runs[-1] += 1
            else:
                runs.append(1)
            prev = i
        if min(runs) >= min(m, k):
            best = min(best, float(cost[list(combo)].sum()))
    got = best_chunks(cost, usable, k, m)
    if math.isinf(best):
        assert got is None
    else:
        assert got is not None and len(got) == k and all(usable[got])
        assert float(cost[got].sum()) == best


def test_a_restart_per_run_makes_pauses_pay_for_themselves():
    # free pauses: the valley and the 13:00 dip (390); a 1-slot restart per run makes the dip
    # cost 250 + 105 more, so one run starting in the 250 slot before the valley wins (645)
    free = Request("a", 0, 24, 4, interruptible=True, min_chunk=1)
    assert POLICIES.get("greenest-chunks")(free, view()).runs == ((2, 5), (13, 14))
    paid = Request("a", 0, 24, 4, interruptible=True, min_chunk=1, restart_slots=1)
    out = POLICIES.get("greenest-chunks")(paid, view())
    assert out == Choice("home", ((1, 6),), 250 + 100 + 90 + 95 + 110)
    # run-now and lowest-window pay one start too
    assert POLICIES.get("run-now")(paid, view()).runs == ((0, 5),)
    assert POLICIES.get("lowest-window")(paid, view()).runs == ((1, 6),)


@pytest.mark.parametrize("seed", range(25))
def test_best_chunks_with_restarts_matches_brute_force(seed):
    """Every run's first ``restart`` slots do no work; runs are >= m long and do some work."""
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(4, 11))
    cost = rng.integers(1, 50, n).astype(float)
    usable = rng.random(n) > 0.2
    k, m, r = int(rng.integers(1, 5)), int(rng.integers(1, 4)), int(rng.integers(1, 3))
    m_eff = min(m, k + r)
    best = math.inf
    for size in range(1, n + 1):
        for combo in itertools.combinations(range(n), size):
            runs: list[list[int]] = []
            for i in combo:
                if runs and runs[-1][1] == i:
                    runs[-1][1] += 1
                else:
                    runs.append([i, i + 1])
            lengths = [b - a for a, b in runs]
            if not all(usable[list(combo)]) or min(lengths) < max(m_eff, r + 1):
                continue
            if sum(length - r for length in lengths) == k:
                best = min(best, float(cost[list(combo)].sum()))
    got = best_chunks(cost, usable, k, m, r)
    if math.isinf(best):
        assert got is None
    else:
        assert got is not None and all(usable[got])
        assert float(cost[got].sum()) == best


def test_deadline_is_respected_and_an_impossible_job_is_reported():
    free = np.ones(48, int)
    free[0:20] = 0  # site busy until slot 20
    req = Request("late", 0, 22, 4)
    for name in POLICIES:
        out = POLICIES.get(name)(req, view(free=free.copy()))
        assert isinstance(out, Infeasible), name
        assert "late" in out.reason and "only 2" in out.reason


def test_place_books_capacity_so_the_second_job_waits():
    free = np.ones(48, int)
    sites = view(free=free)
    reqs = [Request("a", 0, 24, 3), Request("b", 0, 24, 3)]
    a, b = place(reqs, POLICIES.get("lowest-window"), sites)
    assert a.runs == ((2, 5),)
    # b cannot overlap a: its best is the window right after or before the valley
    assert b.runs and set(range(*b.runs[0])).isdisjoint(range(2, 5))
    assert b.cost == min(
        sum(TWO_DAYS[s : s + 3]) for s in range(0, 22) if set(range(s, s + 3)).isdisjoint({2, 3, 4})
    )
    assert int(free.min()) == 0 and int(free.sum()) == 48 - 6


def test_spatial_picks_the_greener_site_and_prefers_home_on_ties():
    sites = {"home": SiteView(TWO_DAYS.copy()), "away": SiteView(TWO_DAYS * 0.5)}
    req = Request("a", 0, 24, 2, interruptible=True, sites=("home", "away"))
    out = POLICIES.get("spatial")(req, sites)
    assert out.site == "away" and out.cost == (90 + 95) * 0.5
    tie = {"home": SiteView(TWO_DAYS.copy()), "away": SiteView(TWO_DAYS.copy())}
    assert POLICIES.get("spatial")(req, tie).site == "home"
