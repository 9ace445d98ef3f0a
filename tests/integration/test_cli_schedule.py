"""`greentune schedule` end to end: plan (table, files, emit), errors, simulate, run; and a real
tiny greentune run paused at a checkpoint and resumed by the executor on a simulated clock."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from greentune.cli.schedule import schedule_app
from greentune.schedule.executor import SimClock, execute
from greentune.schedule.jobs import load_jobs
from greentune.schedule.plan import make_plan
from tests.conftest import SHARED_DATA, make_series, series_overrides
from tests.unit.schedule.helpers import write_jobs, write_trace

runner = CliRunner()
T0 = dt.datetime(2024, 1, 3, tzinfo=dt.UTC)
EM = SHARED_DATA / "carbon" / "electricitymaps"

JOBS = """
schedule: {{now: 2024-01-03T00:00Z, forecast: seasonal-naive, history: 2D, output_dir: {runs}}}
sites:
  home: {{carbon: "trace:{trace}", capacity: 1}}
jobs:
  - name: {name}
    {what}
    energy: {{energy_wh: 0.01, duration: 6h}}
    deadline: +12h
    interruptible: true
"""


def job_file(tmp_path: Path, what: str, name: str = "tiny") -> Path:
    trace = write_trace(tmp_path / "trace.csv")
    body = JOBS.format(trace=trace, runs=tmp_path / "runs", what=what, name=name)
    return write_jobs(tmp_path / "jobs.yaml", body)


def test_plan_prints_the_table_and_writes_plan_files(tmp_path):
    path = job_file(tmp_path, "command: [sleep, '1']")
    result = runner.invoke(schedule_app, ["plan", str(path), "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert "01-03 00:00–03:00, 01-03 06:00–09:00" in result.output
    assert "saving 50.0 %" in result.output  # 100x3 + 200x3 against 100x3 + 500x3
    plan = json.loads((tmp_path / "p" / "plan.json").read_text())
    assert plan["totals"]["expected_g"] == pytest.approx(0.01 / 6 * 900 / 1000)
    assert (tmp_path / "p" / "plan.png").stat().st_size > 1000
    assert "<table>" in (tmp_path / "p" / "plan.html").read_text()
    emitted = runner.invoke(schedule_app, ["plan", str(path), "--emit", "slurm"])
    assert emitted.exit_code == 0 and "sbatch --parsable --job-name=tiny-1" in emitted.output


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("jobs: []\nsites: {a: {carbon: fixed:1}}\n", "'jobs' must be a non-empty list"),
        ("sites: {a: {carbon: 'trace:/nowhere.csv'}}\njobs: [{name: j, command: [x], "
         "energy: {energy_wh: 1, duration: 1h}, deadline: +2h}]\n", "nowhere.csv"),
    ],
)  # fmt: skip
def test_bad_files_are_one_red_line_and_exit_2(tmp_path, body, message):
    path = write_jobs(tmp_path / "jobs.yaml", body)
    result = runner.invoke(schedule_app, ["plan", str(path)])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    policy = runner.invoke(schedule_app, ["plan", str(job_file(tmp_path, "command: [x]")),
                                          "--policy", "fastest"])  # fmt: skip
    assert policy.exit_code == 2 and "unknown scheduling policy 'fastest'" in policy.output


def test_run_executes_a_command_job_on_a_fast_clock(tmp_path):
    marker = tmp_path / "ran.txt"
    what = f"command: [{sys.executable}, -c, \"open('{marker}', 'a').write('x')\"]"
    path = job_file(tmp_path, what, name="cmd")
    out = tmp_path / "out"
    result = runner.invoke(
        schedule_app, ["run", str(path), "--out", str(out), "--speedup", "36000"]
    )
    assert result.exit_code == 0, result.output
    state = json.loads((out / "state.json").read_text())
    assert state["jobs"]["cmd"]["status"] == "done" and marker.read_text() == "x"
    # a second `run` finds the finished state and starts nothing again
    again = runner.invoke(schedule_app, ["run", str(path), "--out", str(out), "--speedup", "36000"])
    assert again.exit_code == 0 and "continuing the plan" in again.output
    assert marker.read_text() == "x"


@pytest.mark.skipif(not EM.is_dir(), reason=f"{EM} not found (shared data)")
def test_simulate_reports_savings_per_policy():
    result = runner.invoke(
        schedule_app,
        ["simulate", "--trace", str(EM), "--zones", "GB", "--year", "2023", "--non-interruptible",
         "--policies", "lowest-window", "--forecast", "perfect"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "GB 2023: 3387 jobs" in result.output and "lowest-window" in result.output
    bad = runner.invoke(schedule_app, ["simulate", "--trace", str(EM), "--zones", "XX"])
    assert bad.exit_code == 2 and "no XX_*_hourly.csv" in bad.output


def test_simulate_refuses_a_negative_restart(tmp_path):
    result = runner.invoke(schedule_app, ["simulate", "--trace", str(tmp_path), "--restart", "-1"])
    assert result.exit_code == 2 and "--restart must be >= 0 slots, got -1" in result.output


def test_a_real_run_is_paused_at_a_checkpoint_and_resumed(tmp_path):
    """The clock waits for training to checkpoint, jumps to the end of the first chunk (the run
    gets SIGTERM), then to the start of the second (the run resumes from its checkpoint)."""
    csv = tmp_path / "load.csv"
    make_series().to_csv(csv, index=False)
    runs = tmp_path / "runs"
    config = tmp_path / "tiny.yaml"
    config.write_text("task: forecast\n")
    overrides = [
        o for o in series_overrides(csv, runs, "tiny") if not o.startswith(("name=", "output_dir="))
    ]
    overrides += ["train.epochs=2", "train.patience=null", "train.checkpoint_every=3",
                  "eval.baselines=[seasonal_naive_daily]"]  # fmt: skip
    path = job_file(tmp_path, f"config: {config}\n    overrides: {json.dumps(overrides)}")
    jf = load_jobs(path)
    plan = make_plan(jf, "greenest-chunks")
    out = tmp_path / "out"
    seen: dict[str, dict] = {}

    def gate() -> float:
        state = (
            json.loads((out / "state.json").read_text()) if (out / "state.json").exists() else {}
        )
        job = state.get("jobs", {}).get("tiny", {})
        ckpt = runs / "tiny" / "checkpoints"
        if job.get("chunk", 0) >= 1:
            if "paused" not in seen:  # run.json as the first chunk's run left it
                seen["paused"] = json.loads((runs / "tiny" / "run.json").read_text())
            sim_h = 6.5
        elif ckpt.is_dir() and any(ckpt.glob("step-*")):
            sim_h = 3.0
        else:
            sim_h = 0.5
        return 1000.0 + sim_h * 3600 / 3600.0

    clock = SimClock(T0, 3600.0, real_origin=1000.0, real_now=gate,
                     real_sleep=lambda s: time.sleep(min(s, 0.1) or 0.05))  # fmt: skip
    state = execute(plan, {j.name: j for j in jf.jobs}, out, clock, output_dir=runs,
                    greentune=(sys.executable, "-m", "greentune"), log=lambda m: None)  # fmt: skip
    tiny = state["jobs"]["tiny"]
    assert tiny["status"] == "done", (out / "tiny.log").read_text()[-2000:]
    assert [(x["chunk"], x["exit_code"]) for x in tiny["launches"]] == [(0, 143), (1, 0)]
    # the contract of `greentune run` on SIGTERM: status paused (not failed), no error, the
    # step of the checkpoint it continues from and the command that continues it
    paused = seen["paused"]
    step = paused["paused_at_step"]
    assert (paused["status"], paused["error"]) == ("paused", None)
    assert paused["resume_command"] == f"greentune run --resume {runs / 'tiny'}"
    assert isinstance(step, int) and step >= 3  # the clock waited for the first checkpoint
    assert json.loads((runs / "tiny" / "run.json").read_text())["status"] == "complete"
    log = (runs / "tiny" / "log.txt").read_text()
    assert f"continue with greentune run --resume {runs / 'tiny'}" in log
    assert f"resumed from the checkpoint at step {step}" in log  # where it paused
    assert (runs / "tiny" / "metrics.json").is_file()
