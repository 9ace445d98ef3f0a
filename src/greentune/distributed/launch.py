"""``greentune run --nproc N``: start N local worker processes through torchrun.

The parent resolves the config and creates the run directory first, then every worker runs
``greentune run --resume RUN_DIR``: all ranks agree on the directory, and a worker group that
torchrun restarts (``--max-restarts``) continues from the last checkpoint instead of starting
over. The parent itself trains nothing and meters nothing; each worker meters its own windows.

Several machines: start torchrun yourself on each, e.g.

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
        -m greentune run CONFIG name=myrun

(the run directory must be on a filesystem every node sees).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from greentune.errors import GreentuneError


class DistributedError(GreentuneError):
    """A worker process failed; the message names the run directory to resume."""


def torchrun_command(run_dir: Path, nproc: int, max_restarts: int = 0) -> list[str]:
    """The torchrun command line that starts ``nproc`` workers on this machine."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        f"--max-restarts={max_restarts}",
        "-m",
        "greentune",
        "run",
        "--resume",
        str(run_dir),
    ]


def launch_local(run_dir: Path, nproc: int, max_restarts: int = 0) -> None:
    """Run the workers to completion; a failed worker group becomes a DistributedError."""
    if nproc < 1:
        raise DistributedError(f"--nproc must be >= 1, got {nproc}")
    code = subprocess.run(torchrun_command(run_dir, nproc, max_restarts), check=False).returncode
    if code != 0:
        raise DistributedError(
            f"a worker of the {nproc}-process run failed (torchrun exit code {code}; its error "
            f"is printed above). The last checkpoint is kept: continue with "
            f"greentune run --resume {run_dir} [--nproc N]"
        )
