"""The job file: valid files load to exact values; every mistake names file, job and key."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from greentune.energy.ledger import Ledger
from greentune.errors import ScheduleError
from greentune.schedule.jobs import EnergyEstimate, Site, job_argv, load_jobs

NOW = dt.datetime(2024, 1, 3, 0, 0, tzinfo=dt.UTC)


def write_ledger(
    run: Path, phases: dict[str, tuple[float, float]], more: list[dict] | None = None
) -> None:
    """A real ledger (energy.json + .csv) with one top-level window per phase: (J, s); ``more``
    rows after them."""
    rows = [
        {
            "window": phase,
            "phase": phase,
            "parent": None,
            "depth": 0,
            "command": "run",
            "rank": 0,
            "start": "2024-01-01T00:00:00+00:00",
            "end": "2024-01-01T00:00:00+00:00",
            "duration_s": seconds,
            "energy_j": {"cpu": joules},
            "sources": {"cpu": "fake"},
            "kind": "model",
            "intensity_g_per_kwh": None,
            "emissions_g": None,
            "pue": 1.0,
            "ok": True,
            "extra": {},
        }
        for phase, (joules, seconds) in phases.items()
    ]
    run.mkdir(parents=True, exist_ok=True)
    Ledger([*rows, *(more or [])]).save(run)


GOOD = """
schedule: {now: 2024-01-03T00:00Z, slot: 30min, policy: spatial, forecast: seasonal-naive}
sites:
  a: {carbon: "fixed:100", capacity: 2}
  b: {carbon: "fixed:50", capacity: 1}
jobs:
  - name: j1
    config: c.yaml
    overrides: [train.epochs=2]
    energy: {energy_wh: 10, duration: 90min}
    deadline: +1D
    interruptible: true
    min_chunk: 1h
    sites: [a, b]
  - name: j2
    command: [python, x.py]
    energy: {energy_j: 7200, duration: 1h}
    earliest_start: 2024-01-03T06:00+01:00
    deadline: 2024-01-03T12:00Z
"""


def test_a_valid_file_loads_with_exact_values(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text(GOOD)
    jf = load_jobs(path)
    assert jf.settings.now == NOW and jf.settings.slot_s == 1800 and jf.settings.policy == "spatial"
    j1, j2 = jf.jobs
    assert j1.estimate.energy_j == 36000 and j1.estimate.duration_s == 5400
    assert j1.estimate.power_w == pytest.approx(36000 / 5400)
    assert j1.earliest_start == NOW and j1.deadline == NOW + dt.timedelta(days=1)
    assert j1.interruptible and j1.min_chunk_s == 3600 and j1.sites == ("a", "b")
    assert j2.earliest_start == dt.datetime(2024, 1, 3, 5, tzinfo=dt.UTC)  # +01:00 -> UTC
    assert j2.sites == ("a",) and j2.min_chunk_s == 1800 and not j2.is_greentune
    assert job_argv(j1, "runs", resume=False) == [
        "greentune",
        "run",
        "c.yaml",
        "train.epochs=2",
        "name=j1",
        "output_dir=runs",
    ]
    assert job_argv(j1, "runs", resume=True) == ["greentune", "run", "--resume", "runs/j1"]
    assert job_argv(j2, "runs", resume=True) == ["python", "x.py"]


def test_energy_from_an_earlier_runs_ledger(tmp_path):
    run = tmp_path / "runs" / "old"
    write_ledger(run, {"data": (1000.0, 40.0), "train": (4000.0, 60.0)})
    path = tmp_path / "jobs.yaml"
    path.write_text(GOOD.replace("{energy_wh: 10, duration: 90min}", "{from_run: runs/old}"))
    jf = load_jobs(path)
    assert (jf.jobs[0].estimate.energy_j, jf.jobs[0].estimate.duration_s) == (5000.0, 100.0)
    assert jf.jobs[0].estimate.source == f"ledger {run}"
    scaled = load_jobs(path, time_scale=60)
    assert scaled.jobs[0].estimate.duration_s == 6000.0  # 100 real s on a 60x clock
    assert scaled.jobs[0].estimate.energy_j == 5000.0


def test_energy_from_a_run_is_its_own_not_later_commands_and_its_ranks_ran_together(tmp_path):
    run = tmp_path / "runs" / "old"
    write_ledger(run, {"data": (1000.0, 40.0), "train": (4000.0, 60.0)})
    base = json.loads((run / "energy.json").read_text())["rows"][1]
    rank1 = {**base, "rank": 1, "energy_j": {"cpu": 3000.0}, "duration_s": 90.0}
    served = {**base, "command": "serve", "window": "serve", "duration_s": 86400.0}
    write_ledger(run, {"data": (1000.0, 40.0), "train": (4000.0, 60.0)}, [rank1, served])
    path = tmp_path / "jobs.yaml"
    path.write_text(GOOD.replace("{energy_wh: 10, duration: 90min}", "{from_run: runs/old}"))
    estimate = load_jobs(path).jobs[0].estimate
    # both ranks' energy; rank 0's 100 s beside rank 1's 90 s; a day of serving left out
    assert (estimate.energy_j, estimate.duration_s) == (5000.0 + 3000.0, 100.0)


def test_energy_from_a_profiling_run(tmp_path):
    def profiler(job, steps):
        run = tmp_path / f"{job.name}-p"
        write_ledger(run, {"data": (100.0, 10.0), "train": (200.0, 20.0)})
        assert steps == 10
        return run

    path = tmp_path / "jobs.yaml"
    path.write_text(
        GOOD.replace("{energy_wh: 10, duration: 90min}", "{profile_steps: 10, steps: 50}")
    )
    est = load_jobs(path, profiler=profiler).jobs[0].estimate
    # other phases once (100 J, 10 s) + training scaled by 50 / 10
    assert (est.energy_j, est.duration_s) == (100.0 + 1000.0, 10.0 + 100.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("deadline: +1D", "deadline: tomorrow"),
            r"job 1 \(j1\): deadline: cannot read 'tomorrow'",
        ),
        (("deadline: +1D", "deadline: 2024-01-04 09:00"), "has no time zone"),
        (("sites: [a, b]", "sites: [a, c]"), r"unknown site 'c' in 'sites'; defined sites: a, b"),
        (
            ("min_chunk: 1h", "min_chunk: 1h\n    colour: red"),
            r"job 1 \(j1\): unknown key colour; valid keys: name, energy, deadline",
        ),
        (("{energy_wh: 10, duration: 90min}", "{energy_wh: 10}"), "energy: expected one of"),
        (("deadline: +1D", "deadline: +1h"), "shorter than the job"),
        (("config: c.yaml", "config: c.yaml\n    command: [x]"), "exactly one of 'config'"),
        (("capacity: 1}", "capacity: 0}"), r"site 'b': 'capacity' must be a whole number >= 1"),
        (("- name: j2", "- name: j1"), "repeats the name 'j1'"),
        (("slot: 30min", "slot: 7h"), "slot must divide a day"),
        # the same config system as run configs (greentune.config.build) types every key
        (("interruptible: true", "interruptible: yes please"), "interruptible must be true or"),
        (
            ("    deadline: 2024-01-03T12:00Z\n", ""),
            r"job 2 \(j2\): 'deadline' is missing; e.g. deadline: \+24h",
        ),
        (("min_chunk: 1h", "min_chunk: 1h\n    units: two"), "units must be an integer, got 'two'"),
        (("capacity: 2}", "capacity: 2, colour: red}"), "unknown key sites.a.colour; valid keys"),
        (('carbon: "fixed:100", ', ""), "site 'a': 'carbon' is missing; give a provider spec"),
        (
            ("slot: 30min,", "slot: [30min],"),
            "schedule.slot must be one of: a number, a string; got \\['30min'\\]",
        ),
    ],
)
def test_bad_job_files_name_file_job_and_key(tmp_path, change, message):
    path = tmp_path / "jobs.yaml"
    path.write_text(GOOD.replace(*change, 1))
    with pytest.raises(ScheduleError, match=message) as err:
        load_jobs(path)
    assert str(path) in str(err.value)


def test_missing_ledger_and_unreadable_file(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text(GOOD.replace("{energy_wh: 10, duration: 90min}", "{from_run: nowhere}"))
    with pytest.raises(ScheduleError, match="energy.json not found; run the config once"):
        load_jobs(path)
    with pytest.raises(ScheduleError, match="cannot read job file"):
        load_jobs(tmp_path / "absent.yaml")
    path.write_text("jobs: [\n")
    with pytest.raises(ScheduleError, match="not valid YAML"):
        load_jobs(path)


SHIPPED = sorted((Path(__file__).resolve().parents[3] / "configs" / "schedule").glob("*.yml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_job_file_loads_and_plans(path, monkeypatch):
    from greentune.schedule.plan import make_plan
    from tests.conftest import SHARED_DATA

    jf = load_jobs(path)
    assert jf.jobs
    if not (SHARED_DATA / "carbon" / "electricitymaps").is_dir():
        pytest.skip("shared carbon traces not found")
    monkeypatch.chdir(path.parents[2])  # the shipped files name the traces from the repo root
    plan = make_plan(jf)
    assert all(j["status"] == "planned" for j in plan["jobs"])


def test_the_shipped_job_file_loads_to_its_values():
    """configs/schedule/gb_week.yml, as its comment describes it: three jobs on a week of
    Great Britain's 2023 trace, planned with greenest-chunks and a LightGBM carbon forecast."""
    repo = Path(__file__).resolve().parents[3]
    assert [p.name for p in SHIPPED] == ["gb_week.yml"]
    jf = load_jobs(SHIPPED[0], clock=lambda: NOW)  # the file's schedule.now wins over the clock
    start = dt.datetime(2023, 3, 6, 8, tzinfo=dt.UTC)
    hour = dt.timedelta(hours=1)
    s = jf.settings
    assert (s.now, s.slot_s, s.policy, s.forecast) == (start, 3600, "greenest-chunks", "lightgbm")
    assert (s.history_s, s.output_dir) == (60 * 86400, "runs")
    trace = "trace:../shared/data/carbon/electricitymaps"
    assert jf.sites == {
        "gb": Site("gb", f"{trace}@GB", 2),
        "de": Site("de", f"{trace}@DE-LU", 4),
    }
    lora, ln, sweep = jf.jobs
    assert (lora.name, lora.config, lora.command) == (
        "vic-lora",
        "configs/forecast/vic_lora.yaml",
        None,
    )
    assert lora.estimate == EnergyEstimate(120 * 3600, 6 * 3600, "given")
    assert (lora.earliest_start, lora.deadline) == (start, start + 36 * hour)
    assert lora.interruptible and lora.min_chunk_s == 7200 and lora.sites == ("gb", "de")
    assert (ln.name, ln.config) == ("vic-ln", "configs/forecast/vic_ln.yaml")
    assert ln.estimate == EnergyEstimate(60 * 3600, 3 * 3600, "given")
    assert (ln.earliest_start, ln.deadline) == (start + 4 * hour, start + 25 * hour)
    assert not ln.interruptible and ln.min_chunk_s == 3600 and ln.sites == ("gb",)
    assert (sweep.name, sweep.config) == ("sweep", None)
    assert sweep.command == ("python", "-c", "print('any command')") and not sweep.is_greentune
    assert sweep.estimate == EnergyEstimate(30 * 3600, 2 * 3600, "given")
    assert (sweep.earliest_start, sweep.deadline) == (start, start + 24 * hour)
    assert all(j.units == 1 and not j.overrides for j in jf.jobs)
    # the run configs it names are shipped too (paths from the repository root)
    assert all((repo / j.config).is_file() for j in (lora, ln) if j.config)


def test_a_command_string_and_yaml_datetimes(tmp_path):
    path = tmp_path / "jobs.yaml"
    text = GOOD.replace("command: [python, x.py]", "command: python x.py --fast")
    text = text.replace("deadline: 2024-01-03T12:00Z", "deadline: 2024-01-03T12:00:00Z")
    path.write_text(text)
    j2 = load_jobs(path).jobs[1]
    assert j2.command == ("python", "x.py", "--fast")
    assert j2.deadline == dt.datetime(2024, 1, 3, 12, tzinfo=dt.UTC)


def test_empty_overrides_mean_none(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text(GOOD.replace("overrides: [train.epochs=2]", "overrides:"))
    assert load_jobs(path).jobs[0].overrides == ()
