"""Shared fixtures: tiny deterministic series, tiny backbones, run directories."""

# ruff: noqa: E402  (each worker is pinned to its core before torch and the tests load)

from __future__ import annotations

import os


def _one_core_per_worker() -> None:
    """Under pytest-xdist with no more workers than cores, pin each worker (and the processes
    it starts) to a core of its own. Every run sizes its torch threads to the cores it may use;
    unpinned, two workers each ran two spinning OpenMP threads on two cores, and a neural peer's
    training took up to 6x as long as alone."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if worker.startswith("gw") and 1 < count <= len(cores):
        os.sched_setaffinity(0, {cores[int(worker[2:]) % len(cores)]})
        # numpy's OpenBLAS counts the machine's cores, not the affinity: one thread, here and
        # in the runs it starts, or a resumed run's ridge sums differ in the last bit
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = "1"
        from threadpoolctl import threadpool_limits  # a plugin may have loaded numpy already

        threadpool_limits(1)


_one_core_per_worker()
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# report.html is tested on its own (tests/integration/test_report.py): other runs skip it.
TINY = [
    "model.backbone=tiny-bert",
    "train.batch_size=16",
    "eval.batch_size=64",
    "eval.report=false",
]


def make_series(
    days: int = 40, freq: str = "1h", seed: int = 0, tz: str | None = None
) -> pd.DataFrame:
    """Hourly load with a daily cycle, a weekly cycle and a U-shaped temperature effect."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(
        "2021-01-04", periods=days * 24 * 3600 // pd.Timedelta(freq).seconds, freq=freq, tz=tz
    )
    hours = index.hour.to_numpy() + index.minute.to_numpy() / 60
    temp = 15 + 8 * np.sin(2 * np.pi * (hours - 9) / 24) + rng.normal(0, 1, len(index))
    weekend = (index.day_of_week >= 5).astype(float)
    load = (
        100
        + 20 * np.sin(2 * np.pi * (hours - 6) / 24)
        - 10 * weekend
        + 0.5 * (temp - 18) ** 2
        + rng.normal(0, 2, len(index))
    )
    return pd.DataFrame({"ts": index, "load_mw": load, "temp_c": temp})


@pytest.fixture
def tiny_series() -> pd.DataFrame:
    return make_series()


@pytest.fixture
def tiny_csv(tmp_path: Path, tiny_series: pd.DataFrame) -> Path:
    path = tmp_path / "load.csv"
    tiny_series.to_csv(path, index=False)
    return path


@pytest.fixture
def tmp_run_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def series_overrides(path: Path, out: Path, name: str = "r") -> list[str]:
    """A small hourly forecasting config: 2 days of context, 1 day ahead."""
    return [
        "data.source=csv",
        f"data.path={path}",
        "data.time_col=ts",
        "data.target=load_mw",
        "data.covariates=[temp_c]",
        "data.temperature_col=temp_c",
        "data.context_length=48",
        "data.horizon=24",
        "data.val=6D",
        "data.test=6D",
        "data.val_origins=6",
        "data.train_stride=3",
        "model.patch_len=12",
        f"output_dir={out}",
        f"name={name}",
        *TINY,
    ]


def cli(*args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """A command in its own process, as a user runs it (``fault``: a GREENTUNE_FAULT spec); the
    energy of every run compared then includes the same imports (in pytest's process they are
    paid once, by the first)."""
    from greentune import faults

    env = {**os.environ, faults.ENV: fault} if fault else os.environ
    return subprocess.run(
        [sys.executable, "-m", "greentune", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def tiny_classify_run(tmp: Path, rows: int = 120, seed: int = 0, *extra: str):
    """A finished tiny-bert classification run on synthetic grid-incident tickets (one epoch)."""
    import greentune as gt
    from greentune.data.text import synthetic_incidents

    path = tmp / "t.csv"
    synthetic_incidents(rows, seed=seed).to_csv(path, index=False)
    cfg = gt.build_config(
        overrides=[
            "task=classify",
            "model.backbone=tiny-bert",
            "eval.report=false",
            "train.epochs=1",
            "text.max_length=32",
            f"text.path={path}",
            f"output_dir={tmp}/runs",
            "name=c",
            *extra,
        ]
    )
    return gt.run(cfg, echo=lambda m: None)
