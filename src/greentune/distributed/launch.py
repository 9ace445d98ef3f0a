"""``greentune run --nproc N``: start N local worker processes through torchrun.

The parent resolves the config and creates the run directory first, then every worker runs
``greentune run --resume RUN_DIR``: all ranks agree on the directory, and a worker group that
torchrun restarts (``--max-restarts``) continues from the last checkpoint instead of starting
over. The parent itself trains nothing and meters nothing; each worker meters its own windows.

Several machines: start torchrun yourself on each, e.g.

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
        -m greentune run CONFIG name=myrun

(the run directory must be on a filesystem every node sees).

Signals: torchrun runs in its own session, and SIGTERM / SIGINT that reach this process are
forwarded to it once each. torchrun passes them to every worker (waiting
``TORCH_ELASTIC_SHUTDOWN_TIMEOUT``, default 30 s, before SIGKILL), so ``greentune run --nproc``
pauses like one process does (see ``greentune.train.pause``). Its own session keeps a signal
sent to this process's group from reaching torchrun twice: a second SIGTERM means "stop now".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from greentune.errors import GreentuneError
from greentune.runlock import RunLock


class DistributedError(GreentuneError):
    """A worker process failed; the message names the run directory to resume."""


def torchrun_command(
    run_dir: str | os.PathLike[str], nproc: int, max_restarts: int = 0
) -> list[str]:
    """The torchrun command line that starts ``nproc`` workers on this machine."""
    return [
        sys.executable,
        "-m",
        "greentune.distributed.launch",  # torchrun itself, see _torchrun below
        "--standalone",
        f"--nproc-per-node={nproc}",
        f"--max-restarts={max_restarts}",
        "-m",
        "greentune",
        "run",
        "--resume",
        os.fspath(run_dir),
    ]


def launch_local(
    run_dir: str | os.PathLike[str], nproc: int, max_restarts: int = 0, lock: RunLock | None = None
) -> str | None:
    """Run the workers to the end; returns run.json's status (``complete`` or ``paused``).

    A failed worker group becomes a DistributedError. With the run's ``lock`` held here,
    torchrun shares it (it stays held while torchrun lives, even if this process dies) and the
    workers work under it.
    """
    if nproc < 1:
        raise DistributedError(f"--nproc must be >= 1, got {nproc}")
    fds = (lock.fd,) if lock is not None and lock.fd is not None else ()
    proc = subprocess.Popen(
        torchrun_command(run_dir, nproc, max_restarts), start_new_session=True, pass_fds=fds
    )
    if lock is not None:
        lock.add_pid(proc.pid)
    with forward_signals(proc, (signal.SIGTERM, signal.SIGINT)):
        code = proc.wait()
    status = run_status(run_dir)
    if status == "paused":  # torchrun itself exits 1 after a signal; the workers paused
        return status
    if code != 0:
        raise DistributedError(
            f"a worker of the {nproc}-process run failed (torchrun exit code {code}; its error "
            f"is printed above). The last checkpoint is kept: continue with "
            f"greentune run --resume {run_dir} [--nproc N]"
        )
    return status


@contextmanager
def forward_signals(proc: subprocess.Popen[bytes], signals: tuple[int, ...]) -> Iterator[None]:
    """While the block runs, send each of ``signals`` that reaches us on to ``proc``."""

    def forward(signum: int, frame: object) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_status(run_dir: str | os.PathLike[str]) -> str | None:
    """run.json's status, or None when the workers never wrote one (or it is unreadable)."""
    from greentune.rundir import read_status

    return read_status(run_dir)


def _torchrun(argv: list[str]) -> int:
    """torchrun, except that leaving on a forwarded signal prints no traceback of its own: the
    workers report the pause, and the exit code (128 + signal) says what happened."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main

    try:
        main(argv)
    except SignalException as exc:
        return 128 + int(exc.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(_torchrun(sys.argv[1:]))
