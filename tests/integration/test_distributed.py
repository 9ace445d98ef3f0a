"""Several processes with torch.distributed (gloo on CPU): equivalence with one process, every
window once, resume with another world size, a dead rank, restarts, two nodes over loopback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
from typer.testing import CliRunner

from greentune.cli import (
    app,
    commands,  # noqa: F401  (registers the commands)
    quiet_libraries,
)
from greentune.train.checkpoint import list_checkpoints
from tests.conftest import make_series, series_overrides

runner = CliRunner()
quiet_libraries()
BASE = [
    "train.epochs=3",
    "train.patience=null",
    "train.batch_size=16",
    "train.keep_checkpoints=10",
    "eval.baselines=[seasonal_naive_weekly,linear]",
]
# One step's gradient matches to float precision (test below); over many Adam steps the last-bit
# differences of another summation order grow (measured: ~1e-4 absolute after 39 steps on losses
# of ~0.025), so whole curves are compared at 1 % and the first epoch at 1e-4.
FIRST_EPOCH = 13


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def curve(run: Path) -> np.ndarray:
    return np.array(json.loads((run / "metrics.json").read_text())["training"]["loss_curve"])


@pytest.fixture(scope="module")
def csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dist") / "load.csv"
    make_series().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def one_and_two(csv, tmp_path_factory) -> tuple[Path, Path, str]:
    out = tmp_path_factory.mktemp("runs")
    one = invoke("run", *series_overrides(csv, out, "one"), *BASE)
    assert one.exit_code == 0, one.output
    two = invoke("run", *series_overrides(csv, out, "two"), *BASE, "--nproc", "2")
    assert two.exit_code == 0, two.output
    return out / "one", out / "two", two.output


def test_two_processes_follow_the_one_process_loss_curve(one_and_two):
    one, two, output = one_and_two
    assert "launching 2 processes (torchrun)" in output
    a, b = curve(one), curve(two)
    assert len(a) == len(b) == 3 * 13  # 201 windows / 16 per global batch, 3 epochs
    _same_curve(a, b)
    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    assert m2["training"]["samples"] == m1["training"]["samples"] == 3 * 201
    name = m1["model"]
    assert m2["test"][name]["mape"] == pytest.approx(m1["test"][name]["mape"], rel=1e-3)
    log = (two / "log.txt").read_text()
    assert "threads: 1 per process x 2 processes on this node, 2 processes in all" in log
    assert log.count("run directory:") == 1  # one log, written by rank 0
    # the launcher says the training defaults it resolved (the workers start with --resume)
    said = "default: train.lr 0.0001: the forecast default for peft.method=lora ("
    assert log.count(said) == 1 and (one / "log.txt").read_text().count(said) == 1


def _same_curve(a: np.ndarray, b: np.ndarray) -> None:
    assert np.abs(a - b)[:FIRST_EPOCH].max() < 1e-4
    assert (np.abs(a - b) / a).max() < 0.01


def test_one_ddp_step_has_the_one_process_gradient(tmp_path):
    out = tmp_path / "grads.json"
    script = Path(__file__).with_name("ddp_gradients.py")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        str(script), str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["ddp_is_active"]
    assert result["max_relative_grad_difference"] < 1e-5
    assert result["loss_difference"] < 1e-6


def test_test_windows_are_gathered_exactly_once(one_and_two):
    _, two, _ = one_and_two
    pred = pd.read_parquet(two / "predictions.parquet")
    ours = pred[pred.model == json.loads((two / "metrics.json").read_text())["model"]]
    assert len(ours) == 6 * 24  # 6 daily test origins x 24 steps, no padded duplicates
    assert not ours.duplicated(["origin", "step"]).any()


def test_each_rank_meters_its_own_windows(one_and_two):
    _, two, _ = one_and_two
    rows = json.loads((two / "energy.json").read_text())["rows"]
    train = [r for r in rows if r["window"] == "train"]
    assert sorted(r["rank"] for r in train) == [0, 1]
    assert all(r["energy_j"]["cpu"] > 0 for r in train)
    baselines = [r for r in rows if r["phase"] == "baseline"]
    assert baselines and {r["rank"] for r in baselines} == {0}  # one-process baselines: rank 0
    metrics = json.loads((two / "metrics.json").read_text())
    billed = metrics["test"][metrics["model"]]["fit_wh"]
    assert billed == pytest.approx(sum(sum(r["energy_j"].values()) for r in train) / 3600)


def test_resume_with_another_number_of_processes(one_and_two, tmp_path):
    _, two, _ = one_and_two
    part = tmp_path / "part"
    shutil.copytree(two, part)
    for ckpt in list_checkpoints(part / "checkpoints"):
        if int(ckpt.stem.split("-")[1]) > 13:  # keep the end of epoch 0
            ckpt.unlink()
    for name in ("model", "metrics.json", "predictions.parquet"):
        p = part / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    result = invoke("run", "--resume", str(part))  # 2 processes -> 1
    assert result.exit_code == 0, result.output
    assert "resumed from the checkpoint at step 13" in (part / "log.txt").read_text()
    _same_curve(curve(two), curve(part))


@pytest.fixture(scope="module")
def fsdp_run(csv, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp")
    args = [*series_overrides(csv, out, "fsdp"), *BASE, "train.distributed_strategy=fsdp"]
    result = invoke("run", *args, "--nproc", "2")
    assert result.exit_code == 0, result.output
    return out / "fsdp"


def test_fsdp_takes_the_ddp_steps(one_and_two, fsdp_run):
    one, two, _ = one_and_two
    _same_curve(curve(one), curve(fsdp_run))
    # reduce-scatter of the shards averages the same gradients as DDP's all-reduce (measured:
    # equal to the last bit at 2 processes)
    np.testing.assert_allclose(curve(fsdp_run), curve(two), rtol=0, atol=1e-6)
    m2 = json.loads((two / "metrics.json").read_text())
    mf = json.loads((fsdp_run / "metrics.json").read_text())
    name = m2["model"]
    # the whole model is gathered back for evaluation: the test error DDP's model has
    assert mf["test"][name]["mape"] == pytest.approx(m2["test"][name]["mape"], rel=1e-6)
    assert mf["training"]["trainable_parameters"] == m2["training"]["trainable_parameters"]
    # checkpoints hold whole tensors gathered from the shards, written once
    last_ddp = torch.load(list_checkpoints(two / "checkpoints")[-1], weights_only=False)
    last_fsdp = torch.load(list_checkpoints(fsdp_run / "checkpoints")[-1], weights_only=False)
    assert last_fsdp["optimizer_format"] == "fqn" and last_ddp["optimizer_format"] == "index"
    assert last_fsdp["model"].keys() == last_ddp["model"].keys()
    for key, value in last_ddp["model"].items():
        torch.testing.assert_close(last_fsdp["model"][key], value, rtol=0, atol=1e-6)


def test_an_fsdp_checkpoint_resumes_with_one_process(fsdp_run, tmp_path):
    part = tmp_path / "part"
    shutil.copytree(fsdp_run, part)
    for ckpt in list_checkpoints(part / "checkpoints"):
        if int(ckpt.stem.split("-")[1]) > 13:  # keep the end of epoch 0
            ckpt.unlink()
    for name in ("model", "metrics.json", "predictions.parquet"):
        p = part / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    result = invoke("run", "--resume", str(part))  # 2 FSDP processes -> 1 process
    assert result.exit_code == 0, result.output
    assert "resumed from the checkpoint at step 13" in (part / "log.txt").read_text()
    _same_curve(curve(fsdp_run), curve(part))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "greentune", *args]


def _worker(parent: psutil.Process, rank: str) -> psutil.Process | None:
    for proc in parent.children(recursive=True):
        try:
            env = proc.environ()
        except psutil.Error:
            continue
        if env.get("RANK") == rank and "greentune" in " ".join(proc.cmdline()):
            return proc
    return None


def _start_and_kill_rank_1(args: list[str], run: Path) -> tuple[subprocess.Popen, float]:
    """Start a 2-process run, wait for its first checkpoint, kill rank 1; return the kill time."""
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (run / "checkpoints").is_dir() and list_checkpoints(run / "checkpoints"):
            victim = _worker(psutil.Process(proc.pid), "1")
            if victim is not None:
                victim.kill()
                return proc, time.monotonic()
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the run wrote no checkpoint within 120 s")


LONG = ["train.epochs=60", "train.patience=null", "train.checkpoint_every=20", "eval.baselines=[]"]


def test_a_dead_rank_stops_the_others_with_a_clear_error(csv, tmp_path):
    args = ["run", *series_overrides(csv, tmp_path, "dies"), *LONG, "--nproc", "2"]
    proc, killed_at = _start_and_kill_rank_1(args, tmp_path / "dies")
    output, _ = proc.communicate(timeout=120)
    waited_s = time.monotonic() - killed_at
    text = output.decode()
    assert proc.returncode == 2, text
    assert "a worker of the 2-process run failed" in text and "--resume" in text
    assert waited_s < 30, f"the surviving rank took {waited_s:.0f} s to stop"
    status = json.loads((tmp_path / "dies" / "run.json").read_text())
    assert status["status"] == "failed"  # rank 0 unwound on SIGTERM and said so
    assert list_checkpoints(tmp_path / "dies" / "checkpoints")  # the last checkpoint is kept


@pytest.mark.slow  # 30-70 s; 45 of 45 passed in benchmarks/faults.py --elastic; slow_tests.py
def test_a_restarted_worker_group_resumes_from_the_last_checkpoint(csv, tmp_path):
    args = [
        "run", *series_overrides(csv, tmp_path, "again"), *LONG, "--nproc", "2",
        "--max-restarts", "1",
    ]  # fmt: skip
    proc, _ = _start_and_kill_rank_1(args, tmp_path / "again")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output.decode()
    run = tmp_path / "again"
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    assert "resumed from the checkpoint at step" in (run / "log.txt").read_text()
    assert len(curve(run)) == 60 * 13


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# slow: two nodes' rendezvous over loopback (30 s); CI keeps the two-process runs
@pytest.mark.slow
def test_two_nodes_over_loopback(one_and_two, csv, tmp_path):
    one, _, _ = one_and_two
    port = _free_port()
    node = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
        "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=loopback",
        "-m", "greentune", "run", *series_overrides(csv, tmp_path, "nodes"), *BASE,
    ]  # fmt: skip
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
    nodes = [subprocess.Popen(node, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)]
    nodes.append(subprocess.Popen(node, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = [p.communicate(timeout=300)[0].decode() for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(outputs)
    _same_curve(curve(one), curve(tmp_path / "nodes"))


def test_bad_process_counts_are_refused():
    result = invoke("run", "--nproc", "0")
    assert result.exit_code == 2 and "--nproc must be >= 1" in result.output
