"""Execute a plan on this machine: wait, start, pause at chunk ends, resume, persist every step.

A greentune job is paused with SIGTERM (the run finishes its step, checkpoints and exits) and
resumed with ``greentune run --resume``; any other command is paused with SIGSTOP and continued
with SIGCONT. The last chunk is never cut short: a job that needs longer than planned runs on.

state.json (next to plan.json) holds the clock's origin and, per job, its status (waiting,
running, paused, done, failed, infeasible), next chunk, pid and every launch; it is rewritten
atomically at each change, so a restarted scheduler continues where the last one stopped: a
job whose process is still alive is adopted, one whose process died is judged by its run.json.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from greentune.errors import ScheduleError
from greentune.io import write_json
from greentune.procs import boot_id, process_started, same_process
from greentune.rundir import read_status
from greentune.schedule.jobs import Job, job_argv

__all__ = ["Handle", "PopenRunner", "SimClock", "execute", "load_state", "started_plan"]

TERMINAL = ("done", "failed", "infeasible")
RESUMABLE = ("paused", "failed", "crashed", "running")
"""run.json statuses of a greentune job whose process is gone: continue it with --resume."""
STATE_JSON = "state.json"
PLAN_JSON = "plan.json"


class Handle(Protocol):
    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def send(self, sig: int) -> None: ...


class Runner(Protocol):
    def start(self, argv: list[str], log: Path, exit_file: Path | None = None) -> Handle:
        """Start ``argv``; with ``exit_file``, its exit code is written there when it ends
        (a command: a later scheduler that adopts it has no other way to learn it) and
        signals go to its whole process group."""
        ...

    def adopt(
        self, pid: int, started: float | None = None, boot: str | None = None, group: bool = False
    ) -> Handle | None: ...


EXIT_WRAPPER = """
import os, signal, subprocess, sys
out, cmd, early = sys.argv[1], sys.argv[2:], []
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, lambda sig, frame: early.append(sig))
if early:
    code = 128 + early[0]
else:
    try:
        proc = subprocess.Popen(cmd)
    except OSError as exc:
        print(f"cannot start {cmd[0]}: {exc}", file=sys.stderr)
        code = 127
    else:
        code = proc.wait()
        code = 128 - code if code < 0 else code
with open(out + ".tmp", "w") as f:
    f.write(str(code))
os.replace(out + ".tmp", out)
sys.exit(code)
"""
"""``python -c`` around a command (standard library only: it starts at once): runs it, then
writes its exit code to the file named first (128 + the signal for a command killed by one, as
a shell reports it). Signals go to the job's process group, so the command gets them itself;
the wrapper only outlives them to write the code (a signal before the command started: it is
not started). Stop a job by hand with ``kill -- -PID``: the pid in state.json is the wrapper's."""


def read_exit_code(path: Path) -> int | None:
    """The exit code a wrapped command wrote, or None (not ended, or killed before)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _signal(pid: int, sig: int, group: bool) -> None:
    # a wrapped command runs under its wrapper: SIGSTOP/SIGCONT must reach it too
    # (each job starts in its own session, so its process group id is its pid)
    if group:
        os.killpg(pid, sig)
    else:
        os.kill(pid, sig)


@dataclass
class _PopenHandle:
    proc: subprocess.Popen[bytes]
    group: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def send(self, sig: int) -> None:
        if self.proc.poll() is None:
            _signal(self.proc.pid, sig, self.group)


@dataclass
class _PidHandle:
    """A job started by an earlier scheduler process: alive or not, but no exit code."""

    pid: int
    started: float | None = None
    """The process's start time (``greentune.procs.process_started``) when it was launched."""
    boot: str | None = None
    """The boot it was launched in (``greentune.procs.boot_id``)."""
    group: bool = False
    """Signals go to its process group (a wrapped command)."""

    def poll(self) -> int | None:
        """-1 once the process is gone, a zombie (dead, not yet reaped by whoever inherited
        it), or its pid now belongs to a process started later (reused) or in a later boot."""
        return None if same_process(self.pid, self.started, self.boot) else -1

    def send(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            _signal(self.pid, sig, self.group)


class PopenRunner:
    """Real processes; each in its own session so a scheduler crash does not kill the jobs."""

    def start(self, argv: list[str], log: Path, exit_file: Path | None = None) -> Handle:
        if exit_file is not None:
            exit_file.unlink(missing_ok=True)
            argv = [sys.executable, "-c", EXIT_WRAPPER, str(exit_file), *argv]
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return _PopenHandle(proc, group=exit_file is not None)

    def adopt(
        self, pid: int, started: float | None = None, boot: str | None = None, group: bool = False
    ) -> Handle | None:
        handle = _PidHandle(pid, started, boot, group)
        return handle if handle.poll() is None else None


@dataclass
class SimClock:
    """Simulated time = sim_origin + (real - real_origin) x speedup; speedup 1 is the real clock."""

    sim_origin: dt.datetime
    speedup: float = 1.0
    real_origin: float = field(default_factory=time.time)
    real_now: Callable[[], float] = time.time
    real_sleep: Callable[[float], None] = time.sleep

    def now(self) -> dt.datetime:
        return self.to_sim(self.real_now())

    def to_sim(self, real_s: float) -> dt.datetime:
        return self.sim_origin + dt.timedelta(seconds=(real_s - self.real_origin) * self.speedup)

    def sleep_until(self, when: dt.datetime, cap_real_s: float) -> None:
        wait = (when - self.now()).total_seconds() / self.speedup
        self.real_sleep(max(0.0, min(wait, cap_real_s)))


@dataclass
class JobState:
    name: str
    status: str = "waiting"
    chunk: int = 0
    pid: int | None = None
    pid_started: float | None = None
    """When the process ``pid`` started: a restarted scheduler never adopts a reused pid."""
    pid_boot: str | None = None
    """The boot ``pid`` was started in: nor a pid of an earlier boot."""
    stopping: bool = False
    launches: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None


def load_state(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ScheduleError(
            f"{path} is damaged ({exc}); move it aside to start the plan again"
        ) from None


def started_plan(folder: Path) -> dict[str, Any] | None:
    """The plan an executor already started in ``folder`` (state.json beside plan.json): a
    restarted ``schedule run`` continues it rather than planning anew."""
    if load_state(folder / STATE_JSON) is None or not (folder / PLAN_JSON).is_file():
        return None
    try:
        return dict(json.loads((folder / PLAN_JSON).read_text()))
    except json.JSONDecodeError as exc:
        raise ScheduleError(
            f"{folder / PLAN_JSON} is damaged ({exc}); move {folder} aside to plan again"
        ) from None


def _chunks(row: dict[str, Any]) -> list[tuple[dt.datetime, dt.datetime]]:
    return [
        (dt.datetime.fromisoformat(c["start"]), dt.datetime.fromisoformat(c["end"]))
        for c in row["chunks"]
    ]


def _run_status(output_dir: Path, job: Job) -> str | None:
    """The job's run.json status; None when the run never wrote one (or it is unreadable)."""
    return read_status(output_dir / job.name)


class _Executor:
    def __init__(
        self,
        plan: dict[str, Any],
        jobs: dict[str, Job],
        out: Path,
        clock: SimClock,
        runner: Runner,
        output_dir: Path,
        greentune: tuple[str, ...],
        log: Callable[[str], None],
    ) -> None:
        self.plan, self.jobs, self.out, self.clock = plan, jobs, out, clock
        self.runner, self.output_dir, self.greentune, self.log = runner, output_dir, greentune, log
        self.rows = {row["name"]: row for row in plan["jobs"]}
        self.handles: dict[str, Handle] = {}
        saved = load_state(out / STATE_JSON)
        if saved is not None:
            self.clock.sim_origin = dt.datetime.fromisoformat(saved["sim_origin"])
            self.clock.real_origin = float(saved["real_origin"])
            self.clock.speedup = float(saved["speedup"])
            self.states = {n: JobState(**s) for n, s in saved["jobs"].items()}
            self._adopt()
        else:
            self.states = {
                n: JobState(
                    n, "infeasible" if r["status"] != "planned" else "waiting", note=r.get("reason")
                )
                for n, r in self.rows.items()
            }
        self.save()

    def save(self) -> None:
        write_json(
            self.out / STATE_JSON,
            {
                "schema_version": 1,
                "sim_origin": self.clock.sim_origin.isoformat(),
                "real_origin": self.clock.real_origin,
                "speedup": self.clock.speedup,
                "jobs": {n: asdict(s) for n, s in self.states.items()},
            },
        )

    def _adopt(self) -> None:
        for name, st in self.states.items():
            # a command paused with SIGSTOP keeps its process: adopted, it is continued
            # (SIGCONT) at its next chunk, not started again beside the stopped one
            stopped = st.status == "paused" and not self.jobs[name].is_greentune
            if (st.status != "running" and not stopped) or st.pid is None:
                continue
            command = not self.jobs[name].is_greentune
            handle = self.runner.adopt(st.pid, st.pid_started, st.pid_boot, group=command)
            if handle is not None:
                self.handles[name] = handle
                self.log(f"{name}: adopted {'paused' if stopped else 'running'} process {st.pid}")
            elif stopped and read_exit_code(self.out / f"{name}.exit") is not None:
                self._ended(name, None)  # continued by hand and ended: its code decides
            elif stopped:
                self.log(f"{name}: its paused process {st.pid} is gone; it starts again")
                st.pid, st.pid_started, st.pid_boot = None, None, None
            else:
                self._ended(name, None)

    def _ended(self, name: str, code: int | None) -> None:
        st, job = self.states[name], self.jobs[name]
        now = self.clock.now()
        if code is None and not job.is_greentune:  # adopted: its wrapper wrote the code
            code = read_exit_code(self.out / f"{name}.exit")
        if st.launches:
            st.launches[-1] |= {
                "sim_end": now.isoformat(),
                "real_end": time.time(),
                "exit_code": code,
            }
        run_status = _run_status(self.output_dir, job) if job.is_greentune else None
        if code == 0 or run_status == "complete":
            st.status = "done"
        elif st.stopping or (code is None and (run_status in RESUMABLE or job.is_greentune)):
            # code None: a process a restarted scheduler adopted died, exit code unknown (a
            # command's wrapper writes it; killed, it could not); a greentune job that died
            # before its run began starts again (a real failure then fails with its exit code)
            st.status, st.chunk = "paused", st.chunk + 1
        else:
            st.status, st.note = "failed", f"exit code {code}; see {self.out / (name + '.log')}"
        st.pid, st.pid_started, st.pid_boot, st.stopping = None, None, None, False
        self.handles.pop(name, None)
        self.log(f"{name}: {st.status} at {now:%Y-%m-%d %H:%M} (exit {code})")

    def _launch(self, name: str, now: dt.datetime) -> None:
        st, job = self.states[name], self.jobs[name]
        if st.pid is not None and not job.is_greentune and name in self.handles:
            self.handles[name].send(signal.SIGCONT)
            st.status = "running"
        else:
            resume = job.is_greentune and (self.output_dir / job.name / "config.yaml").is_file()
            argv = job_argv(job, self.output_dir, resume, self.greentune)
            exit_file = None if job.is_greentune else self.out / f"{name}.exit"
            handle = self.runner.start(argv, self.out / f"{name}.log", exit_file)
            self.handles[name], st.pid, st.status = handle, handle.pid, "running"
            st.pid_started, st.pid_boot = process_started(handle.pid), boot_id()
        st.launches.append(
            {"chunk": st.chunk, "sim_start": now.isoformat(), "real_start": time.time()}
        )
        self.log(
            f"{name}: {'resumed' if len(st.launches) > 1 else 'started'} at {now:%Y-%m-%d %H:%M}"
        )

    def _pause(self, name: str, now: dt.datetime) -> None:
        st, job = self.states[name], self.jobs[name]
        if job.is_greentune:
            self.handles[name].send(signal.SIGTERM)  # the run checkpoints and exits
            st.stopping = True
            self.log(
                f"{name}: end of chunk at {now:%Y-%m-%d %H:%M}: SIGTERM, waiting for checkpoint"
            )
        else:
            handle = self.handles[name]
            code = handle.poll()
            if code is not None:  # it ended since the last pass: nothing to pause
                self._ended(name, None if code == -1 and isinstance(handle, _PidHandle) else code)
                return
            handle.send(signal.SIGSTOP)
            st.status, st.chunk = "paused", st.chunk + 1
            st.launches[-1] |= {"sim_end": now.isoformat(), "real_end": time.time()}
            self.log(f"{name}: paused (SIGSTOP) at {now:%Y-%m-%d %H:%M}")

    def step(self) -> dt.datetime | None:
        """One pass over the jobs; returns the next planned event (None: nothing planned)."""
        now = self.clock.now()
        upcoming: list[dt.datetime] = []
        for name, st in self.states.items():
            if st.status in TERMINAL:
                continue
            handle = self.handles.get(name)
            if st.status == "running" and handle is not None:
                code = handle.poll()
                if code is not None:
                    self._ended(
                        name, None if code == -1 and isinstance(handle, _PidHandle) else code
                    )
            chunks = _chunks(self.rows[name])
            if st.status == "running" and not st.stopping and st.chunk < len(chunks) - 1:
                end = chunks[st.chunk][1]
                if now >= end:
                    self._pause(name, now)
                else:
                    upcoming.append(end)
            elif st.status in ("waiting", "paused"):
                start = chunks[st.chunk][0] if st.chunk < len(chunks) else now
                if now >= start:
                    self._launch(name, now)
                else:
                    upcoming.append(start)
        self.save()
        return min(upcoming) if upcoming else None

    def done(self) -> bool:
        return all(st.status in TERMINAL for st in self.states.values())


def execute(
    plan: dict[str, Any],
    jobs: dict[str, Job],
    out: Path,
    clock: SimClock,
    runner: Runner | None = None,
    output_dir: Path = Path("runs"),
    greentune: tuple[str, ...] = ("greentune",),
    log: Callable[[str], None] = print,
    poll_real_s: float = 0.2,
    stop_after: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Run the plan to the end (or until ``stop_after()``); returns state.json's content."""
    out.mkdir(parents=True, exist_ok=True)
    ex = _Executor(plan, jobs, out, clock, runner or PopenRunner(), output_dir, greentune, log)
    while not ex.done() and not stop_after():
        upcoming = ex.step()
        if ex.done() or stop_after():
            break
        target = upcoming or clock.now() + dt.timedelta(days=1)
        clock.sleep_until(target, poll_real_s)
    ex.save()
    return json.loads((out / STATE_JSON).read_text())
