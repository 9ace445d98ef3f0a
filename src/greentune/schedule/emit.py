"""A plan as shell lines for other schedulers: Slurm (``sbatch --begin``) or ``at``.

Each chunk of an interruptible greentune job becomes one submission that runs the job under
``timeout -s TERM <chunk length>``: at the end of its chunk the run gets SIGTERM, writes a
checkpoint and exits; the next chunk resumes it with ``greentune run --resume``. Under Slurm the
chunks are chained with ``--dependency=afterany`` so a late chunk never overlaps the next.
Other commands cannot resume across submissions and run uninterrupted from their first chunk.
"""

from __future__ import annotations

import datetime as dt
import math
import shlex
from typing import Any

from greentune.errors import ScheduleError
from greentune.schedule.jobs import Job, job_argv

__all__ = ["EMITTERS", "emit"]

EMITTERS = ("slurm", "at")


def _chunks(row: dict[str, Any], job: Job) -> list[tuple[dt.datetime, float, bool]]:
    """(start, seconds, last) per submission."""
    chunks = [
        (dt.datetime.fromisoformat(c["start"]), dt.datetime.fromisoformat(c["end"]))
        for c in row["chunks"]
    ]
    if not job.is_greentune:
        chunks = chunks[:1]
    return [(a, (b - a).total_seconds(), i == len(chunks) - 1) for i, (a, b) in enumerate(chunks)]


def _command(job: Job, output_dir: str, index: int, seconds: float, last: bool) -> str:
    argv = job_argv(job, output_dir, resume=index > 0)
    if not last and job.is_greentune:
        # --kill-after: a run that cannot checkpoint within 5 minutes is stopped for good.
        argv = ["timeout", "-s", "TERM", "--kill-after=300", f"{math.ceil(seconds)}s", *argv]
    return shlex.join(argv)


def emit(plan: dict[str, Any], jobs: dict[str, Job], output_dir: str, kind: str) -> list[str]:
    """Shell lines that submit every planned chunk; infeasible jobs become comments."""
    if kind not in EMITTERS:
        raise ScheduleError(f"unknown --emit {kind!r}; valid: {', '.join(EMITTERS)}")
    lines = [f"# greentune schedule: policy {plan['policy']}, forecast {plan['forecast']}"]
    zone = dt.datetime.now().astimezone().tzname()
    # Both sbatch --begin and at -t read local wall-clock times without a zone.
    lines.append(f"# times are local to this machine ({zone}); run the lines where that holds")
    for row in plan["jobs"]:
        job = jobs[row["name"]]
        if row["status"] != "planned":
            lines.append(f"# {row['name']}: not scheduled: {row['reason']}")
            continue
        previous = None
        for i, (start, seconds, last) in enumerate(_chunks(row, job)):
            command = _command(job, output_dir, i, seconds, last)
            var = f"{row['name']}_{i + 1}".replace("-", "_").replace(".", "_")
            if kind == "slurm":
                opts = [
                    f"--job-name={row['name']}-{i + 1}",
                    f"--begin={start.astimezone():%Y-%m-%dT%H:%M:%S}",
                ]
                if previous:
                    opts.append(f"--dependency=afterany:${previous}")
                lines.append(
                    f"{var}=$(sbatch --parsable {' '.join(opts)} --wrap={shlex.quote(command)})"
                )
                previous = var
            else:
                when = start.astimezone().strftime("%Y%m%d%H%M.%S")
                lines.append(f"echo {shlex.quote(command)} | at -t {when}")
    return lines
