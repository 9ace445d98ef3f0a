"""Dynamic batching: requests wait in a bounded queue; one worker thread gathers up to
``max_batch_size`` predictions, drops the ones whose clients left or whose deadline passed, and
runs the rest in one forward pass per model.

The worker waits (at most ``max_wait_s`` after the first request) only while more requests are
on their way (``arrive`` was called for them and they are not queued yet): a lone request never
waits for company that is not coming, so batching costs nothing at low load.

Each batch is metered: its joules are shared among its requests by their number of predictions,
so the energy in a reply is that request's share of the pass that computed it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pandas as pd

from greentune.errors import GreentuneError
from greentune.tasks import Prepared


class QueueFullError(GreentuneError):
    """Too many requests are waiting: the client should retry later (503)."""


class DeadlineError(GreentuneError):
    """The request's time ran out before it was answered (504)."""


@dataclass
class Answer:
    """What one request gets back."""

    frame: pd.DataFrame
    energy_j: float
    """This request's share of its batch's energy."""
    batch_size: int
    """Predictions in the pass that computed it."""
    version: Any = None


@dataclass
class _Job:
    prepared: Prepared
    future: Future[Answer]
    deadline: float
    tag: Any = None


class EnergyProbe:
    """Reads a meter's cumulative joules; ``NullMeter`` reads nothing (0 J, kind 'off')."""

    def __init__(self, meter: Any) -> None:
        self.meter = meter
        self.kind = str(meter.kind)

    def read_j(self) -> float:
        return float(sum(self.meter.read().values()))


BatchHook = Callable[[int, float, float], None]
"""(predictions in the batch, its energy in J, its duration in s): for metrics."""

_STOP = object()


class Batcher:
    """``submit`` from any thread, ``answer`` from the event loop; ``stop`` drains."""

    def __init__(
        self,
        max_batch_size: int,
        max_wait_s: float,
        queue_size: int,
        probe: EnergyProbe,
        on_batch: BatchHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_s
        self.probe, self.on_batch, self._clock = probe, on_batch, clock
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._carry: _Job | None = None
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.predictions = 0
        self.energy_j = 0.0
        self.dropped = 0
        self._closing = False
        self._arriving = 0
        self._arriving_lock = threading.Lock()

    # ------------------------------------------------------------------ front

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="greentune-batcher", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def arrive(self, n: int = 1) -> None:
        """A request is being read and checked: the worker may wait for it (``depart`` when it
        is queued or refused)."""
        with self._arriving_lock:
            self._arriving += n

    def depart(self) -> None:
        self.arrive(-1)

    def submit(self, prepared: Prepared, timeout_s: float, tag: Any = None) -> Future[Answer]:
        if self._closing:
            raise QueueFullError("the server is shutting down; retry on another replica")
        fut: Future[Answer] = Future()
        job = _Job(prepared, fut, self._clock() + timeout_s, tag)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFullError(
                f"{self._queue.maxsize} requests are already waiting; retry shortly"
            ) from None
        return fut

    async def answer(self, prepared: Prepared, timeout_s: float, tag: Any = None) -> Answer:
        """Queue ``prepared`` and wait for its answer. A client that leaves (cancellation) or a
        deadline that passes removes it from the queue before it costs a forward pass."""
        return await self.wait(self.submit(prepared, timeout_s, tag), timeout_s)

    async def wait(self, fut: Future[Answer], timeout_s: float) -> Answer:
        """The answer to a submitted request (see ``answer``)."""
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), timeout_s)
        except TimeoutError:
            fut.cancel()
            raise DeadlineError(f"no answer within {timeout_s:g} s; the server is busy") from None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Answer what is queued, then end the worker (graceful drain)."""
        self._closing = True
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout=timeout_s)

    # ------------------------------------------------------------------ worker

    def _first(self) -> Any:
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        return self._queue.get()

    def _gather(self) -> tuple[list[_Job], bool]:
        """The next batch, and whether the worker should stop after it."""
        first = self._first()
        if first is _STOP:
            return [], True
        batch, size = [first], first.prepared.size
        until = self._clock() + self.max_wait_s
        while size < self.max_batch_size:
            left = until - self._clock()
            try:
                if left > 0 and self._arriving > 0:
                    job = self._queue.get(timeout=min(left, 0.001))  # re-check each ms
                else:
                    job = self._queue.get_nowait()
            except queue.Empty:
                if left > 0 and self._arriving > 0:
                    continue
                break
            if job is _STOP:
                return batch, True
            if size + job.prepared.size > self.max_batch_size:
                self._carry = job  # it opens the next batch
                break
            batch.append(job)
            size += job.prepared.size
        return batch, False

    def _loop(self) -> None:
        stop = False
        while not stop:  # a carried job opens a batch before the stop mark can be read
            batch, stop = self._gather()
            live = []
            now = self._clock()
            for job in batch:
                if not job.future.set_running_or_notify_cancel():
                    self.dropped += 1  # its client left
                elif job.deadline < now:
                    self.dropped += 1
                    job.future.set_exception(DeadlineError("the deadline passed in the queue"))
                else:
                    live.append(job)
            if live:
                self._run(live)

    def _run(self, jobs: list[_Job]) -> None:
        by_model: dict[int, list[_Job]] = {}
        for job in jobs:  # a reload may leave requests for two models in one batch
            by_model.setdefault(id(job.prepared.predictor), []).append(job)
        for group in by_model.values():
            size = sum(j.prepared.size for j in group)
            t0, j0 = self._clock(), self.probe.read_j()
            try:
                frames = group[0].prepared.predictor.predict_prepared([j.prepared for j in group])
            except Exception as exc:  # every request of the pass gets the error
                for job in group:
                    job.future.set_exception(exc)
                continue
            energy_j = max(0.0, self.probe.read_j() - j0)
            duration_s = self._clock() - t0
            self.batches += 1
            self.predictions += size
            self.energy_j += energy_j
            if self.on_batch is not None:
                self.on_batch(size, energy_j, duration_s)
            for job, frame in zip(group, frames, strict=True):
                share = energy_j * job.prepared.size / size if size else 0.0
                job.future.set_result(Answer(frame, share, size, job.tag))
