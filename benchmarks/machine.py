"""What machine a benchmark ran on, written beside every figure, and the writing itself."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import torch


def machine_info() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "energy_kind": energy_kind_here(),
    }


def energy_kind_here() -> str:
    """The kind of energy figure ``energy.meter: auto`` makes on this machine: ``measured``
    (RAPL, and NVML too where there is a GPU), ``model`` (no counters) or ``mixed``."""
    from greentune.config import EnergyConfig
    from greentune.energy import auto_source_names

    names, _ = auto_source_names(EnergyConfig())
    if "model" not in names:
        return "measured"
    return "model" if names == ["model"] else "mixed"


ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """The checkout's commit (short), recorded beside figures so runs of other code are not
    mixed; ``+dirty`` where the product or the benchmark scripts differ from it."""
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    code = ["src", "benchmarks", ":(exclude)benchmarks/results", ":(exclude)benchmarks/README.md"]
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", *code], cwd=ROOT, check=False)
    return (done.stdout.strip() or "unknown") + ("+dirty" if dirty.returncode == 1 else "")


def short_commit(ref: str) -> str:
    """``ref`` as a short commit id (a name for an earlier version's checkout)."""
    done = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def worktree(commit: str, name: str) -> Path:
    """The ``src`` of ``commit`` checked out beside this one (benchmarks/results/runs/NAME-
    COMMIT), to time an earlier version in a process of its own; ``drop_worktree`` removes it."""
    path = ROOT / "benchmarks" / "results" / "runs" / f"{name}-{commit}"
    if not (path / "src").is_dir():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(path), commit], cwd=ROOT, check=True
        )
    return path / "src"


def run_in(src: Path, cmd: list[str], out: Path) -> dict:
    """Run ``cmd`` with the greentune of ``src`` on the path and read the JSON it wrote to
    ``out``, whose ``src`` must name that greentune (not the one installed beside it)."""
    subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(src)}, check=True, cwd=ROOT)
    got = json.loads(out.read_text())
    if Path(got.pop("src")).resolve() != src.resolve():
        raise SystemExit(f"{out}: measured another greentune than {src}")
    return got


def drop_worktree(src: Path) -> None:
    """Remove ``worktree``'s checkout: git would list it as a worktree otherwise."""
    subprocess.run(["git", "worktree", "remove", "--force", str(src.parent)], cwd=ROOT, check=False)


def same_src(a: str, b: str) -> bool:
    """Whether two commits have the same src/ (the product's code)."""
    done = subprocess.run(["git", "diff", "--quiet", a, b, "--", "src"], cwd=ROOT, check=False)
    return done.returncode == 0


def write_results(stem: Path, payload: dict[str, object], markdown: str) -> None:
    """``stem``.json (the figures and every run behind them) and ``stem``.md (the table), then
    the table on stdout."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=str))
    stem.with_suffix(".md").write_text(markdown)
    print(markdown)
