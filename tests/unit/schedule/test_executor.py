"""The executor with a fake clock and fake processes: chunks, pauses, resumes, restarts."""

from __future__ import annotations

import datetime as dt
import json
import signal
from pathlib import Path

import pytest

from greentune.schedule.executor import SimClock, execute
from greentune.schedule.jobs import load_jobs
from greentune.schedule.plan import make_plan
from tests.unit.schedule.helpers import write_jobs, write_trace

T0 = dt.datetime(2024, 1, 3, tzinfo=dt.UTC)
JOBS = """
schedule: {{now: 2024-01-03T00:00Z, forecast: seasonal-naive, history: 2D, output_dir: {runs}}}
sites:
  home: {{carbon: "trace:{trace}", capacity: 2}}
jobs:
  - name: chunky
    config: c.yaml
    energy: {{energy_wh: 60, duration: 6h}}
    deadline: +12h
    interruptible: true
  - name: cmd
    command: [work]
    energy: {{energy_wh: 10, duration: 4h}}
    deadline: +12h
    interruptible: true
"""


class FakeClock(SimClock):
    """Real time advances only when the executor sleeps: every run is instant and exact."""

    def __init__(self) -> None:
        self.t = 1000.0
        super().__init__(T0, speedup=3600.0, real_origin=1000.0, real_now=lambda: self.t,
                         real_sleep=self._sleep)  # fmt: skip

    def _sleep(self, seconds: float) -> None:
        self.t += max(seconds, 1e-3)


class FakeHandle:
    def __init__(self, runner: FakeRunner, name: str, pid: int) -> None:
        self.runner, self.name, self.pid = runner, name, pid
        self.since: dt.datetime | None = runner.clock.now()
        self.term = False

    def _worked(self) -> None:
        if self.since is not None:
            self.runner.remaining[self.name] -= (
                self.runner.clock.now() - self.since
            ).total_seconds()
            self.since = self.runner.clock.now()

    def poll(self) -> int | None:
        self._worked()
        if self.term:
            self.runner.status(self.name, "paused")
            return 143
        if self.since is not None and self.runner.remaining[self.name] <= 1e-6:
            self.runner.status(self.name, "complete")
            return 0
        return None

    def send(self, sig: int) -> None:
        self.runner.signals.append((self.name, sig, self.runner.clock.now()))
        self._worked()
        if sig == signal.SIGTERM:  # a greentune run checkpoints and stops working at once
            self.term, self.since = True, None
        elif sig == signal.SIGSTOP:
            self.since = None
        elif sig == signal.SIGCONT:
            self.since = self.runner.clock.now()


class FakeRunner:
    def __init__(self, clock: SimClock, runs: Path, alive: dict[int, FakeHandle] | None = None):
        self.clock, self.runs = clock, runs
        self.remaining = {"chunky": 6 * 3600.0, "cmd": 4 * 3600.0}
        self.starts: list[tuple[list[str], dt.datetime]] = []
        self.signals: list[tuple[str, int, dt.datetime]] = []
        self.alive = alive or {}

    def status(self, name: str, status: str) -> None:
        (self.runs / name).mkdir(parents=True, exist_ok=True)
        (self.runs / name / "run.json").write_text(json.dumps({"status": status}))

    def start(self, argv: list[str], log: Path, exit_file: Path | None = None) -> FakeHandle:
        self.starts.append((argv, self.clock.now()))
        name = (
            "cmd" if argv == ["work"] else Path(argv[-1]).name if "--resume" in argv else "chunky"
        )
        if name == "chunky":
            (self.runs / name).mkdir(parents=True, exist_ok=True)
            (self.runs / name / "config.yaml").write_text("task: forecast\n")
        handle = FakeHandle(self, name, 100 + len(self.starts))
        self.alive[handle.pid] = handle
        return handle

    def adopt(
        self, pid: int, started: float | None = None, boot: str | None = None, group: bool = False
    ) -> FakeHandle | None:
        return self.alive.get(pid)


@pytest.fixture
def setup(tmp_path):
    trace = write_trace(tmp_path / "trace.csv")
    runs = tmp_path / "runs"
    path = write_jobs(tmp_path / "jobs.yaml", JOBS.format(trace=trace, runs=runs))
    jf = load_jobs(path)
    plan = make_plan(jf, "greenest-chunks")
    return plan, {j.name: j for j in jf.jobs}, runs, tmp_path / "out"


def hhmm(when: dt.datetime) -> str:
    return when.strftime("%H:%M")


def test_chunks_pause_and_resume_on_plan(setup):
    plan, jobs, runs, out = setup
    assert [(c["start"][11:16], c["end"][11:16]) for c in plan["jobs"][0]["chunks"]] == [
        ("00:00", "03:00"), ("06:00", "09:00")
    ]  # fmt: skip
    clock = FakeClock()
    runner = FakeRunner(clock, runs)
    state = execute(plan, jobs, out, clock, runner, runs, ("gt",), log=lambda m: None)
    assert {n: s["status"] for n, s in state["jobs"].items()} == {"chunky": "done", "cmd": "done"}
    starts = [(argv, hhmm(t)) for argv, t in runner.starts]
    assert (["gt", "run", "c.yaml", "name=chunky", f"output_dir={runs}"], "00:00") in starts
    assert (["gt", "run", "--resume", str(runs / "chunky")], "06:00") in starts
    assert sum(argv == ["work"] for argv, _ in starts) == 1  # a command is continued, not restarted
    sigs = [(n, s, hhmm(t)) for n, s, t in runner.signals]
    assert ("chunky", signal.SIGTERM, "03:00") in sigs
    chunky = state["jobs"]["chunky"]["launches"]
    assert [(x["chunk"], x["sim_start"][11:16], x["exit_code"]) for x in chunky] == [
        (0, "00:00", 143), (1, "06:00", 0)
    ]  # fmt: skip
    # the executor polls every 0.2 s = 12 simulated minutes
    end = dt.datetime.fromisoformat(chunky[1]["sim_end"])
    assert abs(end - (T0 + dt.timedelta(hours=9))) <= dt.timedelta(minutes=12)
    assert runner.remaining["chunky"] == pytest.approx(0, abs=5)  # exactly 6 h of work done


def test_command_jobs_pause_with_sigstop(setup):
    plan, jobs, runs, out = setup
    cmd = plan["jobs"][1]
    clock = FakeClock()
    runner = FakeRunner(clock, runs)
    execute(plan, jobs, out, clock, runner, runs, ("gt",), log=lambda m: None)
    chunks = [(c["start"][11:16], c["end"][11:16]) for c in cmd["chunks"]]
    assert chunks == [("00:00", "03:00"), ("06:00", "07:00")]
    sigs = [(s, hhmm(t)) for n, s, t in runner.signals if n == "cmd"]
    assert sigs == [(signal.SIGSTOP, "03:00"), (signal.SIGCONT, "06:00")]


def test_a_restarted_scheduler_adopts_the_running_job_and_loses_nothing(setup):
    plan, jobs, runs, out = setup
    clock = FakeClock()
    runner = FakeRunner(clock, runs)
    # the scheduler dies at 01:00, while chunky runs its first chunk
    execute(plan, jobs, out, clock, runner, runs, ("gt",), log=lambda m: None,
            stop_after=lambda: clock.now() >= T0 + dt.timedelta(hours=1))  # fmt: skip
    saved = json.loads((out / "state.json").read_text())
    assert saved["jobs"]["chunky"]["status"] == "running"
    pid = saved["jobs"]["chunky"]["pid"]
    # a new scheduler process, a new runner that can only see the live process
    runner2 = FakeRunner(clock, runs, alive=runner.alive)
    runner2.remaining = runner.remaining
    fresh_clock = SimClock(
        T0, 1.0, real_origin=0.0, real_now=clock.real_now, real_sleep=clock.real_sleep
    )
    logs: list[str] = []
    state = execute(plan, jobs, out, fresh_clock, runner2, runs, ("gt",), log=logs.append)
    assert f"chunky: adopted running process {pid}" in logs
    # the clock continued from the saved origin and speedup, not from the new process's
    assert fresh_clock.speedup == 3600.0 and fresh_clock.real_origin == 1000.0
    chunky = state["jobs"]["chunky"]
    assert chunky["status"] == "done"
    assert [(x["chunk"], x["sim_start"][11:16]) for x in chunky["launches"]] == [
        (0, "00:00"), (1, "06:00")
    ]  # fmt: skip
    # only the resume was started by the second scheduler: the first chunk was never rerun
    assert [argv[:3] for argv, _ in runner2.starts if argv != ["work"]] == [
        ["gt", "run", "--resume"]
    ]


def test_restart_after_the_job_finished_while_the_scheduler_was_down(setup):
    plan, jobs, runs, out = setup
    clock = FakeClock()
    runner = FakeRunner(clock, runs)
    execute(plan, jobs, out, clock, runner, runs, ("gt",), log=lambda m: None,
            stop_after=lambda: clock.now() >= T0 + dt.timedelta(hours=1))  # fmt: skip
    runner.status("chunky", "complete")  # it ended meanwhile; its process is gone
    runner2 = FakeRunner(clock, runs, alive={})
    state = execute(plan, jobs, out, clock, runner2, runs, ("gt",), log=lambda m: None)
    assert state["jobs"]["chunky"]["status"] == "done"
    assert not [argv for argv, _ in runner2.starts if argv != ["work"]]


def test_infeasible_jobs_are_reported_in_the_state(setup, tmp_path):
    plan, jobs, runs, out = setup
    plan["jobs"][1] |= {"status": "infeasible", "reason": "no room", "chunks": []}
    clock = FakeClock()
    state = execute(
        plan, jobs, out, clock, FakeRunner(clock, runs), runs, ("gt",), log=lambda m: None
    )
    assert state["jobs"]["cmd"] == state["jobs"]["cmd"] | {
        "status": "infeasible",
        "note": "no room",
    }


def test_an_adopted_pid_that_died_is_a_zombie_or_was_reused_reads_ended():
    import os
    import signal
    import subprocess

    from greentune.schedule.executor import PopenRunner, _PidHandle

    me = PopenRunner().adopt(os.getpid())
    assert me is not None and me.poll() is None
    assert _PidHandle(os.getpid(), started=1.0).poll() == -1  # the pid now names another process
    from greentune.procs import boot_id, process_started

    started = process_started(os.getpid())
    assert PopenRunner().adopt(os.getpid(), started, boot_id()) is not None
    if boot_id() is not None:  # a pid recorded in an earlier boot is another process now
        assert PopenRunner().adopt(os.getpid(), started, "an-earlier-boot") is None
    child = subprocess.Popen(["sleep", "30"])
    os.kill(child.pid, signal.SIGKILL)
    import time

    time.sleep(0.2)  # dead, not reaped: a zombie, as an orphan is until its new parent reaps it
    assert _PidHandle(child.pid).poll() == -1
    child.wait()
    assert _PidHandle(child.pid).poll() == -1


def test_a_restarted_scheduler_continues_a_paused_command_instead_of_starting_it_again(setup):
    plan, jobs, runs, out = setup
    clock = FakeClock()
    runner = FakeRunner(clock, runs)
    # the scheduler dies while the command is stopped (SIGSTOP) between its chunks
    execute(plan, jobs, out, clock, runner, runs, ("gt",), log=lambda m: None,
            stop_after=lambda: any(n == "cmd" and s == signal.SIGSTOP
                                   for n, s, _ in runner.signals))  # fmt: skip
    saved = json.loads((out / "state.json").read_text())["jobs"]["cmd"]
    assert saved["status"] == "paused" and saved["pid"] is not None
    runner2 = FakeRunner(clock, runs, alive=runner.alive)
    runner2.remaining = runner.remaining
    logs: list[str] = []
    state = execute(plan, jobs, out, clock, runner2, runs, ("gt",), log=logs.append)
    assert f"cmd: adopted paused process {saved['pid']}" in logs
    assert state["jobs"]["cmd"]["status"] == "done"
    assert not [argv for argv, _ in runner2.starts if argv == ["work"]]  # never started again
    assert ("cmd", signal.SIGCONT) in [(n, s) for n, s, _ in runner.signals]


def test_a_wrapped_command_leaves_its_exit_code_and_takes_signals_as_a_group(tmp_path):
    """A later scheduler adopts a command by pid and cannot wait for it: the wrapper writes
    its exit code. SIGSTOP, SIGCONT and SIGTERM reach the command under the wrapper."""
    import time

    import psutil

    from greentune.schedule.executor import PopenRunner, read_exit_code

    runner = PopenRunner()
    done = tmp_path / "done.exit"
    handle = runner.start(["sh", "-c", "exit 3"], tmp_path / "a.log", done)
    while handle.poll() is None:
        time.sleep(0.01)
    assert handle.poll() == 3 and read_exit_code(done) == 3
    held = tmp_path / "held.exit"
    handle = runner.start(["sleep", "30"], tmp_path / "b.log", held)
    deadline = time.monotonic() + 10
    while not psutil.Process(handle.pid).children() and time.monotonic() < deadline:
        time.sleep(0.01)  # the wrapper has started the command
    child = psutil.Process(handle.pid).children()[0]
    adopted = runner.adopt(handle.pid, group=True)
    assert adopted is not None

    def status_becomes(want: str) -> bool:
        end = time.monotonic() + 10
        while child.status() != want and time.monotonic() < end:
            time.sleep(0.01)
        return child.status() == want

    adopted.send(signal.SIGSTOP)  # the pause reaches the command, not only its wrapper
    assert status_becomes(psutil.STATUS_STOPPED)
    adopted.send(signal.SIGCONT)
    assert status_becomes(psutil.STATUS_SLEEPING)
    adopted.send(signal.SIGTERM)  # the group: sleep ends, the wrapper writes its code
    deadline = time.monotonic() + 10
    while handle.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handle.poll() == 128 + signal.SIGTERM and read_exit_code(held) == 128 + signal.SIGTERM


def test_a_command_that_ended_while_no_scheduler_watched_reads_its_exit_code(setup):
    plan, jobs, runs, out = setup
    clock = FakeClock()
    runner = FakeRunner(clock, runs)
    execute(plan, jobs, out, clock, runner, runs, ("gt",), log=lambda m: None,
            stop_after=lambda: any(argv == ["work"] for argv, _ in runner.starts))  # fmt: skip
    assert json.loads((out / "state.json").read_text())["jobs"]["cmd"]["status"] == "running"
    (out / "cmd.exit").write_text("0")  # its wrapper wrote it when it ended
    runner2 = FakeRunner(clock, runs, alive={})  # and its process is gone
    logs: list[str] = []
    execute(plan, jobs, out, clock, runner2, runs, ("gt",), log=logs.append,
            stop_after=lambda: True)  # fmt: skip
    assert any(line.startswith("cmd: done") and "(exit 0)" in line for line in logs)
