"""The LWA replay on a synthetic trace: jobs on the slot grid, restarts priced or not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from greentune.schedule.forecast import make_forecaster
from greentune.schedule.policies import POLICIES, Choice, Request
from greentune.schedule.simulate import requests_from_jobs, simulate

from .test_policies import TWO_DAYS, view

TIMES = pd.date_range("2023-01-02", periods=len(TWO_DAYS), freq="30min", tz="UTC")


def _jobs(first: int, slots: int, deadline: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "arrival": [TIMES[first]],
            "duration_min": [30 * slots],
            "deadline": [TIMES[deadline]],
        }
    )


def test_a_restart_moves_the_deadline_so_running_at_once_stays_on_time():
    plain = requests_from_jobs(_jobs(2, 3, 10), TIMES, ("home",), True)
    assert plain == [Request("job0", 2, 10, 3, True, 1, ("home",))]
    paid = requests_from_jobs(_jobs(2, 3, 10), TIMES, ("home",), True, 1, restart_slots=2)
    assert paid == [Request("job0", 2, 12, 3, True, 1, ("home",), restart_slots=2)]


def test_the_unpriced_plan_pays_its_restarts_where_it_runs():
    req = Request("a", 0, 24, 4, interruptible=True, min_chunk=1, restart_slots=1)
    out = POLICIES.get("greenest-chunks-unpriced")(req, view())
    # planned as if pauses were free: (2, 5) and (13, 14); each run first restarts
    assert out == Choice("home", ((2, 6), (13, 15)), 100 + 90 + 95 + 105)
    free = Request("a", 0, 24, 4, interruptible=True, min_chunk=1)
    assert POLICIES.get("greenest-chunks-unpriced")(free, view()) == POLICIES.get(
        "greenest-chunks"
    )(free, view())


def test_a_late_run_pushes_the_next_one():
    cost = np.array([1, 1, 9, 1, 9, 9, 9, 9], float)
    req = Request("a", 0, 8, 3, interruptible=True, restart_slots=2)
    out = POLICIES.get("greenest-chunks-unpriced")(req, view(cost))
    # free plan (0, 2) + (3, 4): the first run ends at 4 after its restart, so the second
    # starts there instead of at 3
    assert out.runs == ((0, 4), (4, 7))


def test_pricing_the_restart_saves_against_the_unpriced_plan():
    req = requests_from_jobs(_jobs(0, 4, 24), TIMES, ("home",), True, 1, restart_slots=1)
    forecaster = make_forecaster("perfect")
    forecaster.fit(TWO_DAYS, TIMES, 48)
    names = ["run-now", "greenest-chunks-unpriced", "greenest-chunks"]
    res = simulate(req, {"home": TWO_DAYS}, TIMES, {"home": forecaster}, names)
    run_now = 300 + 250 + 100 + 90 + 95  # one start, then the work
    unpriced = 100 + 90 + 95 + 110 + 105 + 260
    priced = 250 + 100 + 90 + 95 + 110  # one run, from the 250 slot before the valley
    assert res.emissions == {"run-now": run_now, "greenest-chunks-unpriced": unpriced,
                             "greenest-chunks": priced}  # fmt: skip
    assert res.saving_pct("greenest-chunks") == pytest.approx(100 * (1 - priced / run_now))
    assert res.saving_pct("greenest-chunks-unpriced") < res.saving_pct("greenest-chunks")


def test_lwa_deadlines_are_09_00_on_the_wall_clock_across_daylight_saving():
    from greentune.schedule.simulate import lwa_deadline

    london = "Europe/London"
    # Friday evening before the clocks go forward (Sunday 31 March 2024): Monday 09:00 BST
    friday = pd.Timestamp("2024-03-29 18:00", tz=london)
    assert lwa_deadline(friday) == pd.Timestamp("2024-04-01 09:00", tz=london)
    autumn = pd.Timestamp("2024-10-25 18:30", tz=london)  # back on Sunday 27 October
    assert lwa_deadline(autumn) == pd.Timestamp("2024-10-28 09:00", tz=london)
    early = pd.Timestamp("2024-04-02 07:00", tz=london)  # a workday before 09:00: that day
    assert lwa_deadline(early) == pd.Timestamp("2024-04-02 09:00", tz=london)
    inside = pd.Timestamp("2024-04-02 12:00", tz=london)
    assert lwa_deadline(inside) == inside
