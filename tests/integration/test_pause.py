"""SIGTERM pauses a run: the step finishes, a checkpoint is written at it, run.json says paused,
the process exits 143, and --resume completes with the steps an uninterrupted run takes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from greentune.cli import (
    app,
    commands,  # noqa: F401  (registers the commands)
    quiet_libraries,
)
from greentune.config import TrainConfig
from greentune.train import pause
from greentune.train.callbacks import Callback
from greentune.train.checkpoint import checkpoint_step, list_checkpoints
from greentune.train.loop import train
from tests.conftest import make_series, series_overrides
from tests.unit.test_loop import Toy, ToyData, losses

runner = CliRunner()
quiet_libraries()
# 201 training windows / 16 = 13 steps per epoch; only epoch ends checkpoint on their own.
# 30 epochs (390 steps of a few ms each) keep training going well past the first checkpoint,
# when the SIGTERM is sent; one thread per process keeps the step time steady on a busy machine.
EPOCHS = 30
RUN = [
    f"train.epochs={EPOCHS}",
    "train.threads=1",
    "train.patience=null",
    "train.checkpoint_every=1000",
    "train.keep_checkpoints=10",
    "eval.baselines=[seasonal_naive_daily]",
]


@pytest.fixture
def sigterm_handler() -> Iterator[None]:
    """Tests here install greentune's handler in pytest's own process: put pytest's back, and
    clear a pause request a test left behind (a caught SignalStop leaves it set, and the next
    checkpointing loop in this worker would pause at its first step)."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    pause.install()  # resets the request
    signal.signal(signal.SIGTERM, previous)


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_outside_the_loop_and_a_second_one_exit_at_once(sigterm_handler):
    pause.install()
    with pytest.raises(pause.SignalStop) as outside:
        _kill_self()
    assert outside.value.code == 143
    with pytest.raises(pause.SignalStop), pause.pausable():
        _kill_self()
        assert pause.requested()  # the first one inside the loop only asks
        _kill_self()


def test_the_loop_finishes_the_step_checkpoints_it_and_resume_matches(tmp_path, sigterm_handler):
    cfg = TrainConfig(epochs=2, batch_size=10, lr=0.01, patience=None, checkpoint_every=100)
    whole = train(Toy(), ToyData(), cfg, seed=0)
    pause.install()
    ckpt = tmp_path / "ckpt"

    class SigtermAt7(Callback):
        def on_step_end(self, state, loss):
            if state.step == 7:
                _kill_self()

    with pytest.raises(pause.TrainingPaused) as paused:
        train(Toy(), ToyData(), cfg, seed=0, checkpoint_dir=ckpt, callbacks=[SigtermAt7()])
    # the signal came after step 7's update, so step 8 was the one running: it completed
    assert paused.value.step == 8
    assert [checkpoint_step(p) for p in list_checkpoints(ckpt)] == [8]
    pause.install()
    rest = train(Toy(), ToyData(), cfg, seed=0, checkpoint_dir=ckpt, resume=True)
    assert rest.resumed_from_step == 8
    assert rest.state.step == whole.state.step == 20
    assert losses(rest) == pytest.approx(losses(whole), abs=1e-7)


def _wait_for_checkpoint(proc: subprocess.Popen, run: Path) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        found = list_checkpoints(run / "checkpoints")
        if found:
            return checkpoint_step(found[-1])
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the run wrote no checkpoint within 120 s: " + proc.communicate()[0].decode())


def _pause_run(args: list[str], run: Path) -> tuple[int, dict, str]:
    """Start ``greentune run``, SIGTERM it after its first checkpoint; returns that
    checkpoint's step, run.json and the output."""
    cmd = [sys.executable, "-m", "greentune", "run", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first = _wait_for_checkpoint(proc, run)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 143, output
    return first, json.loads((run / "run.json").read_text()), output


def _check_paused(run: Path, first: int, status: dict) -> int:
    assert status["status"] == "paused", status
    step = status["paused_at_step"]
    # a checkpoint at the interrupted step: a new one, unless the signal came between the
    # periodic checkpoint and the next step (then that checkpoint is the step to resume from)
    assert step >= first
    assert checkpoint_step(list_checkpoints(run / "checkpoints")[-1]) == step
    assert status["resume_command"].startswith(f"greentune run --resume {run}")
    assert not (run / "metrics.json").exists()
    return step


def _resume_and_check(run: Path, step: int) -> None:
    result = runner.invoke(app, ["run", "--resume", str(run)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"resumed from the checkpoint at step {step}" in (run / "log.txt").read_text()
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    assert json.loads((run / "run.json").read_text())["resume_command"] is None
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["training"]["loss_curve"]) == EPOCHS * 13  # as uninterrupted


def test_sigterm_pauses_a_run_and_resume_completes(tmp_path, sigterm_handler):
    csv = tmp_path / "load.csv"
    make_series().to_csv(csv, index=False)
    run = tmp_path / "runs" / "p"
    first, status, output = _pause_run([*series_overrides(csv, run.parent, "p"), *RUN], run)
    step = _check_paused(run, first, status)
    assert f"paused after optimizer step {step}" in output
    ledger = json.loads((run / "energy.json").read_text())["rows"]
    assert any(r["window"].startswith("train/epoch-") and r["duration_s"] > 0 for r in ledger)
    _resume_and_check(run, step)


# slow: two processes paused and resumed (46 s); CI keeps the one-process pause
@pytest.mark.slow
def test_sigterm_pauses_every_process_of_an_nproc_run(tmp_path, sigterm_handler):
    csv = tmp_path / "load.csv"
    make_series().to_csv(csv, index=False)
    run = tmp_path / "runs" / "d"
    args = [*series_overrides(csv, run.parent, "d"), *RUN, "--nproc", "2"]
    first, status, output = _pause_run(args, run)
    step = _check_paused(run, first, status)
    assert status["resume_command"].endswith("--nproc 2")
    assert f"paused: continue with greentune run --resume {run} --nproc 2" in output
    ledger = json.loads((run / "energy.json").read_text())["rows"]
    train_rows = [r for r in ledger if r["window"] == "train"]
    assert sorted(r["rank"] for r in train_rows) == [0, 1]  # every rank's energy is kept
    _resume_and_check(run, step)  # 2 processes -> 1
