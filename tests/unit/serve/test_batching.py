"""The batcher with a fake model and a fake meter: batch composition, energy shares, drops."""

from __future__ import annotations

import asyncio
import threading
import time

import pandas as pd
import pytest

from greentune.energy.meter import FakeSource, Meter
from greentune.serve.batching import Batcher, DeadlineError, EnergyProbe, QueueFullError
from greentune.tasks import Prepared


class FakeModel:
    """Each forward pass takes ``step_s`` and returns the sizes it was given."""

    def __init__(self, step_s: float = 0.0, gate: threading.Event | None = None) -> None:
        self.passes: list[list[int]] = []
        self.step_s, self.gate = step_s, gate

    def predict_prepared(self, items: list[Prepared]) -> list[pd.DataFrame]:
        if self.gate is not None:
            self.gate.wait(5)
        time.sleep(self.step_s)
        self.passes.append([it.size for it in items])
        return [pd.DataFrame({"n": [it.payload]}) for it in items]


def make(model: FakeModel, **kw) -> tuple[Batcher, list]:
    clock = [0.0]

    # the fake meter's joules follow a fake clock advanced by 1 s per read: 10 J per read pair
    def tick() -> float:
        clock[0] += 1.0
        return clock[0]

    meter = Meter([FakeSource(tick, {"cpu": 10.0})], command="serve", rank=0)
    seen: list = []
    batcher = Batcher(
        kw.get("max_batch_size", 8),
        kw.get("max_wait_s", 0.05),
        kw.get("queue_size", 64),
        EnergyProbe(meter),
        on_batch=lambda size, j, s: seen.append((size, j)),
    )
    return batcher, seen


def test_requests_share_a_pass_and_its_energy_by_size():
    model = FakeModel()
    batcher, seen = make(model, max_batch_size=8, max_wait_s=0.2)
    futs = [batcher.submit(Prepared(model, size, i), 5) for i, size in enumerate([1, 3, 4])]
    batcher.start()
    answers = [f.result(5) for f in futs]
    batcher.stop()
    assert model.passes == [[1, 3, 4]]
    # one pass = two reads of the fake meter = 10 J, shared 1:3:4
    assert [a.energy_j for a in answers] == pytest.approx([1.25, 3.75, 5.0])
    assert [a.batch_size for a in answers] == [8, 8, 8]
    assert seen == [(8, pytest.approx(10.0))] and batcher.energy_j == pytest.approx(10.0)
    assert [int(a.frame["n"].iloc[0]) for a in answers] == [0, 1, 2]


def test_a_request_that_would_overflow_the_batch_opens_the_next():
    gate = threading.Event()
    model = FakeModel(gate=gate)
    batcher, _ = make(model, max_batch_size=4, max_wait_s=0.1)
    futs = [batcher.submit(Prepared(model, size, i), 5) for i, size in enumerate([2, 1, 3, 1])]
    batcher.start()
    gate.set()
    for f in futs:
        f.result(5)
    batcher.stop()
    assert model.passes == [[2, 1], [3, 1]]


def test_the_worker_waits_only_for_requests_on_their_way():
    model = FakeModel()
    batcher, _ = make(model, max_batch_size=8, max_wait_s=0.3)
    batcher.start()
    t0 = time.monotonic()
    batcher.submit(Prepared(model, 1, 0), 5).result(5)
    assert time.monotonic() - t0 < 0.2  # nobody else coming: no wait
    batcher.arrive(2)  # two requests being checked
    first = batcher.submit(Prepared(model, 1, 1), 5)
    time.sleep(0.05)
    second = batcher.submit(Prepared(model, 1, 2), 5)
    batcher.depart()
    time.sleep(0.05)
    third = batcher.submit(Prepared(model, 1, 3), 5)
    batcher.depart()
    for f in (first, second, third):
        f.result(5)
    batcher.stop()
    assert model.passes == [[1], [1, 1, 1]]


def test_without_batching_each_request_runs_alone():
    model = FakeModel()
    batcher, _ = make(model, max_batch_size=1, max_wait_s=0.0)
    batcher.start()
    futs = [batcher.submit(Prepared(model, 1, i), 5) for i in range(3)]
    for f in futs:
        f.result(5)
    batcher.stop()
    assert model.passes == [[1], [1], [1]]


def test_full_queue_refuses_and_cancelled_requests_are_dropped():
    gate = threading.Event()
    model = FakeModel(gate=gate)
    batcher, _ = make(model, max_batch_size=1, max_wait_s=0.0, queue_size=2)
    batcher.start()
    first = batcher.submit(Prepared(model, 1, 0), 5)
    time.sleep(0.1)  # the worker holds the first (blocked at the gate); two more may wait
    waiting = [batcher.submit(Prepared(model, 1, i), 5) for i in (1, 2)]
    with pytest.raises(QueueFullError, match="2 requests are already waiting"):
        batcher.submit(Prepared(model, 1, 3), 5)
    waiting[0].cancel()  # its client left
    gate.set()
    first.result(5)
    waiting[1].result(5)
    batcher.stop()
    assert model.passes == [[1], [1]] and batcher.dropped == 1
    with pytest.raises(QueueFullError, match="shutting down"):
        batcher.submit(Prepared(model, 1, 9), 5)


def test_deadline_gives_an_error_and_the_late_request_costs_no_pass():
    gate = threading.Event()
    model = FakeModel(gate=gate)
    batcher, _ = make(model, max_batch_size=1, max_wait_s=0.0)
    batcher.start()

    async def go() -> None:
        blocker = asyncio.ensure_future(batcher.answer(Prepared(model, 1, 0), 5))
        await asyncio.sleep(0.05)
        with pytest.raises(DeadlineError, match="no answer within 0.1 s"):
            await batcher.answer(Prepared(model, 1, 1), 0.1)
        gate.set()
        await blocker

    asyncio.run(go())
    batcher.stop()
    assert model.passes == [[1]] and batcher.dropped == 1


def test_stop_answers_what_is_queued():
    model = FakeModel(step_s=0.01)
    batcher, _ = make(model, max_batch_size=2, max_wait_s=0.0)
    batcher.start()
    futs = [batcher.submit(Prepared(model, 1, i), 5) for i in range(5)]
    batcher.stop()
    assert all(f.done() and f.exception() is None for f in futs)
    assert sum(len(p) for p in model.passes) == 5


def test_a_failing_pass_fails_only_its_requests():
    class Broken(FakeModel):
        def predict_prepared(self, items):
            raise RuntimeError("boom")

    broken, good = Broken(), FakeModel()
    batcher, _ = make(good, max_batch_size=4, max_wait_s=0.1)
    batcher.start()
    bad = batcher.submit(Prepared(broken, 1, 0), 5)
    ok = batcher.submit(Prepared(good, 1, 1), 5)  # another model (a reload): its own pass
    assert ok.result(5).frame["n"].iloc[0] == 1
    with pytest.raises(RuntimeError, match="boom"):
        bad.result(5)
    batcher.stop()
