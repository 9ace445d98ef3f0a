"""``greentune energy measure -- CMD ...``: meter any command with greentune's meter, like `time`.

Anchors (an HF Trainer script, a CodeCarbon-instrumented script) are measured with the very meter
that measures greentune, so their ratios compare like with like. The model source counts the CPU
time of the command and all the processes it waited for, and follows their memory.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from greentune.config import EnergyConfig
from greentune.energy.meter import WindowResult
from greentune.energy.session import metered_window
from greentune.errors import EnergyError


def measure_command(
    argv: list[str], cfg: EnergyConfig, ledger_dir: Path | None = None
) -> tuple[int, WindowResult]:
    """Run ``argv`` to completion inside one ``measure`` window; returns its exit code and cost."""
    if not argv:
        raise EnergyError("give the command to measure after `--`, e.g. -- python train.py")
    if not cfg.enabled:
        raise EnergyError("energy measure needs energy.enabled=true")
    if ledger_dir is not None:
        ledger_dir.mkdir(parents=True, exist_ok=True)
    with metered_window(ledger_dir, cfg, "measure", children=True) as handle:
        assert handle is not None
        # set while the window is open: its row in the ledger and the journal carries them
        handle.extra["argv"] = list(argv)
        try:
            proc = subprocess.run(argv, check=False)
        except FileNotFoundError:
            raise EnergyError(f"command not found: {argv[0]}") from None
        handle.extra["returncode"] = proc.returncode
    assert handle.result is not None
    return proc.returncode, handle.result
