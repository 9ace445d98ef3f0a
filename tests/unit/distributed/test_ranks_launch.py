"""Rank helpers without a process group, the torchrun command line, restarted runs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from greentune.config import build_config
from greentune.distributed import ranks
from greentune.distributed.launch import torchrun_command
from greentune.train.run import restarted_run


def test_one_process_helpers_are_identities(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not ranks.launched() and ranks.rank() == 0 and ranks.world_size() == 1
    assert ranks.shard(5).tolist() == [0, 1, 2, 3, 4]
    rows = np.arange(10).reshape(5, 2)
    assert ranks.gather_shards(rows, 5) is rows
    assert ranks.all_sum([1.5, 2.0]) == [1.5, 2.0]
    assert ranks.broadcast("x") == "x" and ranks.gather_objects(3) == [3]


def test_local_world_comes_from_torchrun_environment(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert ranks.local_world_size() == 4 and ranks.local_rank() == 3 and ranks.launched()


def test_torchrun_command_resumes_the_prepared_run():
    cmd = torchrun_command(Path("runs/x"), 3, max_restarts=2)
    assert cmd[:3] == [sys.executable, "-m", "greentune.distributed.launch"]  # wraps torchrun
    assert "--standalone" in cmd and "--nproc-per-node=3" in cmd and "--max-restarts=2" in cmd
    assert cmd[-5:] == ["-m", "greentune", "run", "--resume", "runs/x"]


def test_a_restarted_worker_group_continues_its_named_run(tmp_path, monkeypatch):
    cfg = build_config(overrides=[f"output_dir={tmp_path}", "name=job"])
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "config.yaml").write_text("task: forecast\n")
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    assert restarted_run(cfg) is None  # a first start makes a new run
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert restarted_run(cfg) == tmp_path / "job"
    unnamed = build_config(overrides=[f"output_dir={tmp_path}"])
    assert restarted_run(unnamed) is None  # no name: nothing to find again
