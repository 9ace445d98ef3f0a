"""The same measurements for every variant: size, latency at batch 1 and 32, energy per 1,000
predictions. Variants are timed in interleaved rounds (fp32, int8, onnx, fp32, int8, ...) so a
noisy neighbour slows all of them alike; warm-up calls are excluded."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from greentune.energy.base import kind_of
from greentune.energy.session import AnyMeter
from greentune.errors import ConfigError

Predict = Callable[[dict[str, torch.Tensor]], Any]


@dataclass(frozen=True)
class BenchPlan:
    """How every model is timed: interleaved rounds of batch-1 and batch-32 calls."""

    rounds: int = 5
    calls_b1: int = 20
    """Batch-1 calls per round."""
    calls_b32: int = 4
    """Batch-32 calls per round (inside the round's energy window)."""
    warmup: int = 3
    """Untimed calls per model before the first round."""

    def __post_init__(self) -> None:
        for name in ("rounds", "calls_b1", "calls_b32"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ConfigError(f"warmup must be >= 0, got {self.warmup}")


@dataclass
class Timings:
    b1_s: list[float] = field(default_factory=list)
    b32_s: list[float] = field(default_factory=list)
    energy_b32_j: float = 0.0
    predictions_b32: int = 0
    metered: bool = False
    kinds: set[str] = field(default_factory=set)
    """How the metered joules were obtained (measured, model)."""


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _timed(fn: Predict, batch: dict[str, torch.Tensor], calls: int) -> list[float]:
    out = []
    with torch.no_grad():
        for _ in range(calls):
            t0 = time.perf_counter()
            fn(batch)
            out.append(time.perf_counter() - t0)
    return out


def bench(
    models: dict[str, Predict],
    b1: dict[str, torch.Tensor],
    b32: dict[str, torch.Tensor],
    plan: BenchPlan,
    meters: dict[str, AnyMeter],
) -> dict[str, Timings]:
    """Time every model on the same two batches; batch-32 calls run inside a meter window of
    the model's own run ("bench/b32-<round>"), which gives its energy per prediction."""
    timings = {name: Timings() for name in models}
    with torch.no_grad():
        for fn in models.values():
            for _ in range(plan.warmup):
                fn(b1)
                fn(b32)
    n32 = len(next(iter(b32.values())))
    for r in range(plan.rounds):
        for name, fn in models.items():
            t = timings[name]
            t.b1_s += _timed(fn, b1, plan.calls_b1)
            meter = meters.get(name)
            if meter is None:
                t.b32_s += _timed(fn, b32, plan.calls_b32)
                continue
            with meter.window(f"bench/b32-{r}") as w:
                t.b32_s += _timed(fn, b32, plan.calls_b32)
            if w.result is not None:
                t.energy_b32_j += w.result.total_j
                t.metered = True
                t.kinds.add(w.result.kind)
            t.predictions_b32 += plan.calls_b32 * n32
    return timings


def latency_row(t: Timings, batch: int) -> dict[str, Any]:
    b1, b32 = np.asarray(t.b1_s) * 1e3, np.asarray(t.b32_s) * 1e3
    row: dict[str, Any] = {
        "latency_b1_ms": {"median": float(np.median(b1)), "p95": float(np.percentile(b1, 95))},
        "latency_b32_ms": {"median": float(np.median(b32)), "p95": float(np.percentile(b32, 95))},
        "throughput_per_s": batch / float(np.median(t.b32_s)),
        "timed_calls": {"b1": len(b1), "b32": len(b32)},
    }
    row["wh_per_1k_predictions"] = (
        1000 * t.energy_b32_j / 3600 / t.predictions_b32
        if t.metered and t.predictions_b32
        else None
    )
    row["energy_kind"] = kind_of(t.kinds)
    return row
