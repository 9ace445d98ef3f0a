"""Faults injected into real commands (the short CI version of ``benchmarks/faults.py``):
kill -9 at named phases of ``run``, then the invariants: the run directory opens and says
``crashed`` with the command to continue, ``--resume`` finishes with the uninterrupted run's
test metrics, every checkpoint is readable (or skipped for an older one), the energy of the
killed process is in the ledger. Plus: a second writer is refused, and failed writes exit 2
leaving the files that were complete still complete."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from greentune import faults
from greentune.cli import (
    app,
    commands,  # noqa: F401  (registers the commands)
    quiet_libraries,
)
from greentune.energy.ledger import Ledger
from greentune.rundir import RunDir, list_checkpoints
from tests.conftest import cli, make_series, series_overrides

runner = CliRunner()
quiet_libraries()
RUN = [
    "train.epochs=3",
    "train.patience=null",
    "train.checkpoint_every=5",
    "train.keep_checkpoints=10",
    "train.threads=1",
    "eval.baselines=[seasonal_naive_daily,linear]",
    "energy.journal_interval_s=0.2",
]


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "load.csv"
    make_series().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def reference(csv, tmp_path_factory) -> RunDir:
    out = tmp_path_factory.mktemp("ref")
    result = cli("run", *series_overrides(csv, out, "ref"), *RUN)
    assert result.returncode == 0, result.stdout + result.stderr
    return RunDir.open(out / "ref")


def _scores(run: RunDir) -> dict[str, dict[str, float]]:
    return {name: r.scores for name, r in run.metrics.test.items()}


def _killed_run(csv: Path, out: Path, fault: str) -> RunDir:
    proc = cli("run", *series_overrides(csv, out, "k"), *RUN, fault=fault)
    assert proc.returncode == -9, proc.stdout + proc.stderr
    return RunDir.open(out / "k")


# one phase in CI; the others (about 40 s each) run with the slow tests (benchmarks/slow_tests.py)
@pytest.mark.parametrize(
    "point",
    [
        "train/epoch-1",
        pytest.param("save", marks=pytest.mark.slow),
        pytest.param("baseline/linear", marks=pytest.mark.slow),
    ],
)
def test_kill_9_in_a_phase_then_resume_matches_the_uninterrupted_run(
    csv, tmp_path, reference, point
):
    run = _killed_run(csv, tmp_path, f"kill@{point}")
    info = run.info
    assert info.status == "crashed" and "died without finishing" in (info.error or "")
    refused = invoke("evaluate", str(run.path))
    assert refused.exit_code == 2
    assert "is crashed" in refused.output and f"greentune run --resume {run.path}" in refused.output
    for path in list_checkpoints(run.checkpoint_dir):
        torch.load(path, map_location="cpu", weights_only=False)  # every one readable
    assert not (run.path / "energy.json").exists()  # the refusal metered nothing
    journaled = run.ledger  # read view: the dead process's windows, from its journal
    assert {"data", "train/ridge-skip"} <= {r["window"] for r in journaled.rows}
    journaled_j = journaled.totals()["all"]["energy_j"]
    assert journaled_j > 0

    resumed = cli("run", "--resume", str(run.path))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{run.path} crashed:" in run.log_path.read_text()
    assert run.status == "complete" and len(run.info.extra["crashes"]) == 1
    dead = run.info.extra["crashes"][0]["holder"]  # the killed process, not the resumer
    assert dead["command"] == "run" and f"pid {dead['pid']} " in (info.error or "")
    assert _scores(run) == _scores(reference)
    ledger = run.ledger
    recovered = [s for s in ledger.sessions if s.get("recovered")]
    assert len(recovered) == 1 and recovered[0]["command"] == "run"
    assert not (run.path / "energy-journal").exists()
    # every joule the journal held is in the ledger, priced now (the ratio to an uninterrupted
    # run, whose CPU-time energy varies by a few % between runs, is benchmarks/faults.py's)
    dead_rows = [r for r in ledger.rows if r["start"] < ledger.sessions[-1]["started"]]
    assert Ledger(dead_rows).totals()["all"]["energy_j"] == pytest.approx(journaled_j, rel=1e-12)
    assert all(r["emissions_g"] is not None for r in dead_rows)


def test_a_kill_mid_checkpoint_and_a_truncated_newest_checkpoint_fall_back(
    csv, tmp_path, reference
):
    run = _killed_run(csv, tmp_path, "kill@checkpoint-write#3")
    kept = list_checkpoints(run.checkpoint_dir)
    assert [p.name for p in kept] == ["step-00000005.pt", "step-00000010.pt"]
    kept[-1].write_bytes(kept[-1].read_bytes()[:100])  # and the disk lost the newest's tail
    resumed = invoke("run", "--resume", str(run.path))
    assert resumed.exit_code == 0, resumed.output
    assert "skipping unreadable checkpoint" in resumed.output
    assert "resumed from the checkpoint at step 5" in run.log_path.read_text()
    assert _scores(run) == _scores(reference)


def test_a_second_writer_is_refused_with_exit_2(reference):
    with reference.lock("run"):
        for args in (["evaluate"], ["run", "--resume"]):
            result = invoke(*args, str(reference.path))
            assert result.exit_code == 2
            assert f"is in use by `greentune run` (pid {os.getpid()}" in result.output


def test_a_full_disk_exits_2_and_keeps_what_was_written(csv, tmp_path, monkeypatch, reference):
    metrics = (reference.path / "metrics.json").read_bytes()
    monkeypatch.setenv(faults.ENV, "enospc@metrics.json")
    again = invoke("evaluate", str(reference.path))
    assert again.exit_code == 2
    assert f"error: cannot write {reference.path / 'metrics.json'}: No space left" in again.output
    assert (reference.path / "metrics.json").read_bytes() == metrics  # untouched

    result = invoke("run", *series_overrides(csv, tmp_path, "full"), *RUN)
    assert result.exit_code == 2 and "the disk is full" in result.output
    run = RunDir.open(tmp_path / "full")
    assert run.status == "failed" and "No space left on device" in (run.info.error or "")
    assert len(run.predictions) > 0  # written before metrics.json, and complete
    assert json.loads((run.path / "energy.json").read_text())["rows"]
    assert not [p for p in run.path.iterdir() if ".tmp" in p.name]


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Callable[[str], Path]]:
    """A real, small file system (tmpfs) of a given size; skipped where mounting is not
    allowed (not root, no CAP_SYS_ADMIN)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = False

    def mount(size: str) -> Path:
        nonlocal mounted
        opts = f"remount,size={size}" if mounted else f"size={size}"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small file system here: {done.stderr.strip()}")
        mounted = True
        return mnt

    yield mount
    if mounted:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize(
    ("size", "fails_at"),
    [
        ("600k", "checkpoints/step-00000005.pt"),
        pytest.param("4800k", "model", marks=pytest.mark.slow),  # the same path, later
    ],
)
def test_a_real_full_disk_fails_cleanly_and_the_run_resumes_once_there_is_room(
    csv, small_disk, reference, size, fails_at
):
    disk = small_disk(size)
    full = cli("run", *series_overrides(csv, disk, "full"), *RUN)
    assert full.returncode == 2 and "Traceback" not in full.stderr
    assert full.stderr.strip().splitlines()[-1] == (
        f"error: cannot write {disk / 'full' / fails_at}: No space left on device; the disk is "
        "full: free some space, or write the run elsewhere (output_dir=...)"
    )
    run = RunDir.open(disk / "full")
    assert run.status in ("failed", "crashed")  # crashed: not even run.json had room
    for path in list_checkpoints(run.checkpoint_dir):
        torch.load(path, map_location="cpu", weights_only=False)
    spent = run.ledger.totals()["all"]["energy_j"]  # from energy.json or, if full, the journal
    assert spent > 0
    small_disk("50m")  # room again
    resumed = cli("run", "--resume", str(run.path))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert _scores(run) == _scores(reference)
    assert run.ledger.totals()["all"]["energy_j"] > spent


def test_a_read_only_file_system_is_one_clear_error(small_disk, reference):
    disk = small_disk("20m")
    shutil.copytree(reference.path, disk / "ref")
    before = {p.name: p.read_bytes() for p in (disk / "ref").iterdir() if p.is_file()}
    small_disk("20m,ro")
    result = cli("evaluate", str(disk / "ref"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Read-only file system" in result.stderr and str(disk / "ref") in result.stderr
    assert {p.name: p.read_bytes() for p in (disk / "ref").iterdir() if p.is_file()} == before
