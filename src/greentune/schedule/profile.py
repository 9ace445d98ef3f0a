"""Profiling a greentune job: run it for a few optimizer steps, in a subprocess, and hand its
ledger to the estimate (``energy: {profile_steps: 20, steps: 600}``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from greentune.errors import ScheduleError
from greentune.schedule.jobs import Launch, Profiler, job_argv


def subprocess_profiler(out: Path, python: str = sys.executable) -> Profiler:
    """A profiler that writes its short runs under ``out`` (``<job>-profile-<steps>``)."""

    def profile(job: Launch, steps: int) -> Path:
        argv = job_argv(job, out, resume=False, greentune=(python, "-m", "greentune"))
        argv += [f"train.max_steps={steps}", f"name={job.name}-profile-{steps}"]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ScheduleError(f"profiling run of job {job.name} failed: {tail[0]}")
        return out / f"{job.name}-profile-{steps}"

    return profile
