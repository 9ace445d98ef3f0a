"""Plans on a synthetic trace whose greenest hours are known; emit and plot outputs."""

from __future__ import annotations

import datetime as dt

import pytest

from greentune.errors import ScheduleError
from greentune.schedule.emit import emit
from greentune.schedule.jobs import load_jobs
from greentune.schedule.plan import _chunks, _weights, make_plan
from greentune.schedule.plot import plot_html, plot_png
from greentune.schedule.policies import Choice
from tests.unit.schedule.helpers import write_jobs, write_trace

# Planning at 2024-01-03 00:00: 00-03 at 100 g/kWh, 03-06 at 500, then 200 (every day).
JOBS = """
schedule: {{now: 2024-01-03T00:00Z, forecast: {forecast}, history: 2D}}
sites:
  home: {{carbon: "trace:{trace}", capacity: 1}}
  away: {{carbon: "fixed:120", capacity: 1}}
jobs:
  - name: chunky
    config: c.yaml
    energy: {{energy_wh: 60, duration: 6h}}
    deadline: +12h
    interruptible: true
    sites: [home, away]
  - name: late
    command: [sleep, "1"]
    energy: {{energy_wh: 10, duration: 2h}}
    earliest_start: +1h
    deadline: +3h
"""


@pytest.fixture
def job_file(tmp_path):
    def make(forecast="seasonal-naive", days=10):
        trace = write_trace(tmp_path / "trace.csv", days=days)
        return write_jobs(tmp_path / "jobs.yaml", JOBS.format(forecast=forecast, trace=trace))

    return make


def test_greenest_chunks_plan_has_the_known_optimum(job_file):
    plan = make_plan(load_jobs(job_file()), "greenest-chunks")
    chunky, late = plan["jobs"]
    # 00-03 at 100 g, then the 200 g hours 06-09 (03-06 at 500 g are skipped); 10 Wh per hour
    assert [(c["start"][11:16], c["end"][11:16]) for c in chunky["chunks"]] == [
        ("00:00", "03:00"),
        ("06:00", "09:00"),
    ]
    assert chunky["expected_g"] == pytest.approx(3 * 0.01 * 100 + 3 * 0.01 * 200)
    assert chunky["run_now_g"] == pytest.approx(3 * 0.01 * 100 + 3 * 0.01 * 500)
    assert chunky["actual_g"] == pytest.approx(chunky["expected_g"])  # seasonal naive is exact here
    # "late" needs home's only unit at 01:00-03:00, which "chunky" holds: it misses its deadline
    assert late["status"] == "infeasible" and "late" in late["reason"]
    assert plan["totals"]["infeasible"] == ["late"]
    assert plan["totals"]["saving_pct"] == pytest.approx(100 * (1 - 9 / 18))
    assert plan["sites"]["home"]["forecast_error"]["mape_pct"] == 0.0


def test_each_chunk_starts_with_the_jobs_restart(job_file, tmp_path):
    """restart: 1h. Two runs still pay: 00-03 (its first hour restarting, 2 h of work at 100 g)
    and 06-11 (restart, then 4 h at 200 g); energy is spent only in the working hours."""
    path = job_file()
    path.write_text(
        path.read_text().replace(
            "    sites: [home, away]", "    restart: 1h\n    sites: [home, away]"
        )
    )
    plan = make_plan(load_jobs(path), "greenest-chunks")
    chunky = plan["jobs"][0]
    assert chunky["restart_s"] == 3600.0
    assert [(c["start"][11:16], c["end"][11:16]) for c in chunky["chunks"]] == [
        ("00:00", "03:00"),
        ("06:00", "11:00"),
    ]
    assert chunky["expected_g"] == pytest.approx(2 * 0.01 * 100 + 4 * 0.01 * 200)
    # run-now: one start at 00:00, then work 01-07 through the 500 g hours
    assert chunky["run_now_g"] == pytest.approx(0.01 * (2 * 100 + 3 * 500 + 200))
    text = path.read_text().replace("    deadline: +3h", "    deadline: +3h\n    restart: 5min")
    path.write_text(text)
    with pytest.raises(ScheduleError, match=r"job 2 \(late\): 'restart' is for greentune jobs"):
        load_jobs(path)


def test_a_restart_shorter_than_a_slot_is_priced_to_the_second(job_file):
    """restart: 15min on hourly slots. The policy still reserves a whole slot per run (the same
    two runs as a 1 h restart), but each run works from its 15th minute: 00:15-03:00 at 100 g
    (2.75 h), then 06:15-09:30 at 200 g (the 3.25 h left). Pricing the first slot as idle
    would put 45 minutes of work in the wrong hours."""
    path = job_file()
    path.write_text(
        path.read_text().replace(
            "    sites: [home, away]", "    restart: 15min\n    sites: [home, away]"
        )
    )
    chunky = make_plan(load_jobs(path), "greenest-chunks")["jobs"][0]
    assert [(c["start"][11:16], c["end"][11:16]) for c in chunky["chunks"]] == [
        ("00:00", "03:00"),
        ("06:00", "09:30"),
    ]
    assert chunky["expected_g"] == pytest.approx(0.01 * (2.75 * 100 + 3.25 * 200))
    # run-now: started at 00:00, working 00:15-06:15
    assert chunky["run_now_g"] == pytest.approx(0.01 * (2.75 * 100 + 3 * 500 + 0.25 * 200))


def test_runs_left_without_work_by_an_exact_restart_are_dropped():
    """Hourly slots, a 15-min restart, 3h10m of work: the policy reserves whole restart slots
    and picks runs 00-04 and 06-08, but priced to the second the first run holds 3h45m of
    work, so the job ends at 03:25 in it. The second run would only restart: it is no chunk,
    and the first is the last (the executor never cuts it short)."""
    choice = Choice("home", ((0, 4), (6, 8)), 0.0)
    start = dt.datetime(2024, 1, 3, tzinfo=dt.UTC)
    chunks = _chunks(choice, start, 3 * 3600 + 600, 3600.0, 900.0)
    assert [(c["start"][11:16], c["end"][11:16]) for c in chunks] == [("00:00", "03:25")]
    idx, seconds = _weights(choice, 3 * 3600 + 600, 3600.0, 900.0)
    assert idx.tolist() == [0, 1, 2, 3] and seconds.tolist() == [2700.0, 3600.0, 3600.0, 1500.0]


def test_spatial_moves_the_job_to_the_greener_site(job_file):
    plan = make_plan(load_jobs(job_file()), "spatial")
    chunky, late = plan["jobs"]
    # away: 6 h x 120 = 720 < home's best 3 x 100 + 3 x 200 = 900
    assert chunky["site"] == "away" and chunky["expected_g"] == pytest.approx(0.06 * 120)
    # with chunky gone from home, late gets home's unit in its only window
    assert late["status"] == "planned" and late["site"] == "home"
    assert [(c["start"][11:16], c["end"][11:16]) for c in late["chunks"]] == [("01:00", "03:00")]


def test_a_trace_that_does_not_cover_the_window_is_a_clear_error(job_file):
    path = job_file(days=2)  # the trace ends at planning time
    text = path.read_text()
    write_jobs(path, text.replace("seasonal-naive", "perfect"))
    with pytest.raises(
        ScheduleError,
        match=r"site 'home' .*perfect forecast replays the source, "
        r"which has no data for 2024-01-03 00:00 UTC inside the planning window "
        r"2024-01-03 00:00 \.\. 2024-01-03 12:00",
    ):
        make_plan(load_jobs(path), None)
    write_jobs(path, text.replace("history: 2D", "history: 20D"))
    with pytest.raises(ScheduleError, match=r"covers only 48 of the 480 slots of history"):
        make_plan(load_jobs(path), None)


def test_emit_slurm_chains_chunks_and_at_uses_timeout(job_file, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    jf = load_jobs(job_file())
    plan = make_plan(jf, "greenest-chunks")
    jobs = {j.name: j for j in jf.jobs}
    slurm = emit(plan, jobs, "runs", "slurm")
    assert slurm[2] == (
        "chunky_1=$(sbatch --parsable --job-name=chunky-1 --begin=2024-01-03T00:00:00 "
        "--wrap='timeout -s TERM --kill-after=300 10800s greentune run c.yaml name=chunky "
        "output_dir=runs')"
    )
    assert slurm[3] == (
        "chunky_2=$(sbatch --parsable --job-name=chunky-2 --begin=2024-01-03T06:00:00 "
        "--dependency=afterany:$chunky_1 --wrap='greentune run --resume runs/chunky')"
    )
    assert slurm[4].startswith("# late: not scheduled: ")
    at = emit(plan, jobs, "runs", "at")
    assert at[3] == "echo 'greentune run --resume runs/chunky' | at -t 202401030600.00"
    with pytest.raises(ScheduleError, match="unknown --emit 'cron'"):
        emit(plan, jobs, "runs", "cron")


def test_plot_writes_a_png_and_a_self_contained_html(job_file, tmp_path):
    plan = make_plan(load_jobs(job_file()), "greenest-chunks")
    plot_png(plan, tmp_path / "plan.png")
    plot_html(plan, tmp_path / "plan.html")
    assert (tmp_path / "plan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (tmp_path / "plan.html").read_text()
    assert "data:image/png;base64," in html and "<td>chunky</td>" in html and "http" not in html


PAST = """
schedule: {{now: 2024-01-03T00:00Z, forecast: seasonal-naive, history: 2D}}
sites:
  home: {{carbon: "trace:{trace}", capacity: 1}}
jobs:
  - name: missed
    command: [sleep, "1"]
    energy: {{energy_wh: 10, duration: 2h}}
    earliest_start: 2024-01-02T19:00Z
    deadline: 2024-01-02T23:00Z
{more}"""
LATER = """  - name: later
    command: [sleep, "1"]
    energy: {energy_wh: 10, duration: 2h}
    deadline: +24h
"""


@pytest.mark.parametrize("policy", ["run-now", "lowest-window", "greenest-chunks"])
def test_a_deadline_that_has_passed_is_infeasible_not_planned_after_it(tmp_path, policy):
    trace = write_trace(tmp_path / "trace.csv")
    jobs = write_jobs(tmp_path / "jobs.yaml", PAST.format(trace=trace, more=LATER))
    missed, later = make_plan(load_jobs(jobs), policy)["jobs"]
    assert missed["status"] == "infeasible"
    assert "the deadline has passed or is too near" in missed["reason"]
    assert later["status"] == "planned"
    # every deadline passed: a plan that says so, not a crash on an empty grid
    alone = write_jobs(tmp_path / "alone.yaml", PAST.format(trace=trace, more=""))
    plan = make_plan(load_jobs(alone), policy)
    assert plan["totals"]["infeasible"] == ["missed"]


def test_work_past_the_plans_last_slot_is_not_priced():
    import numpy as np

    from greentune.schedule.plan import _grams

    values = np.array([100.0, 200.0])
    assert _grams(values, np.array([0, 1]), np.array([3600.0, 3600.0]), 1000.0) == 300.0
    assert _grams(values, np.array([1, 2]), np.array([3600.0, 3600.0]), 1000.0) is None
