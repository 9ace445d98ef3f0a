"""``Service``: what one serving process holds (model, batcher, keys, limits, masks, metrics)
and its life: the energy session opened at start-up and written to the run's ledger at
shutdown, SIGHUP reloads, graceful drain."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from greentune.energy.meter import NullMeter, WindowHandle
from greentune.errors import GreentuneError
from greentune.rundir import RunDir
from greentune.serve.batching import Batcher, EnergyProbe
from greentune.serve.engine import Engine, Loaded, settle_memory
from greentune.serve.keys import KeyStore
from greentune.serve.limits import RateLimiter
from greentune.serve.masking import Masker
from greentune.serve.metrics import ServeMetrics
from greentune.serve.settings import ServeSettings

log = logging.getLogger("greentune.serve")

MeterSession = Callable[[RunDir], contextlib.AbstractContextManager[Any]]
"""The served run -> context manager yielding a meter for the service's life."""


def run_meter_session(settings: ServeSettings) -> MeterSession:
    """The default: ``metered()`` on the served run, its ledger written under the run's lock
    (waited for up to ``ledger_wait_s``)."""

    def session(run: RunDir) -> contextlib.AbstractContextManager[Any]:
        from greentune.energy.session import metered
        from greentune.runlock import acquire

        cfg = run.config.energy
        if not settings.energy:
            cfg = dataclasses.replace(cfg, enabled=False)
        if not os.access(run.path, os.W_OK):  # e.g. a read-only volume in a container
            log.warning(
                "%s is read-only: the service's energy goes to replies and /metrics only, "
                "not to the run's ledger",
                run.path,
            )
            return metered(None, cfg, "serve", log.info)
        return metered(
            run.path,
            cfg,
            "serve",
            log.info,
            ledger_lock=lambda: acquire(run.path, "serve", settings.ledger_wait_s),
        )

    return session


@dataclass
class Service:
    settings: ServeSettings
    engine: Engine
    keys: KeyStore | None
    metrics: ServeMetrics = field(default_factory=ServeMetrics)
    meter_session: MeterSession | None = None
    batcher: Batcher | None = None
    draining: bool = False
    started: bool = False
    requests: int = 0

    def __post_init__(self) -> None:
        s = self.settings
        self.limiter = RateLimiter(s.rate_per_s, s.burst)
        self.masker = Masker(s.mask_patterns)
        if self.meter_session is None:
            self.meter_session = run_meter_session(s)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def loaded(self) -> Loaded:
        return self.engine.current

    def served(self) -> dict[str, float | int | str]:
        b = self.batcher
        if b is None:
            return {"requests": 0, "predictions": 0, "batches": 0, "energy_j": 0.0, "kind": "off"}
        per_1k = 1000 * b.energy_j / 3600 / b.predictions if b.predictions else 0.0
        return {
            "requests": self.requests,
            "predictions": b.predictions,
            "batches": b.batches,
            "energy_j": round(b.energy_j, 6),
            "wh_per_1k_predictions": per_1k,
            "kind": b.probe.kind,
        }

    def reload(
        self, run: str | None = None, variant: str | None = None, row: str | None = None
    ) -> Loaded:
        try:
            new = self.engine.reload(run, variant, row)
        except GreentuneError:
            self.metrics.reloads.labels("failed").inc()
            raise
        self.metrics.reloads.labels("ok").inc()
        self.metrics.serving(new.run.name, new.variant, new.describe()["row"], new.version)
        row = new.describe()["row"]
        log.info("reloaded: %s %s row %s version %s", new.run.name, new.variant, row, new.version)
        return new

    def _on_batch(self, size: int, energy_j: float, duration_s: float) -> None:
        self.metrics.batch_size.observe(size)
        kind = self.batcher.probe.kind if self.batcher else "off"
        self.metrics.energy.labels(kind).inc(energy_j)
        self.metrics.queue_depth.set(self.batcher.depth if self.batcher else 0)

    @contextlib.asynccontextmanager
    async def life(self) -> AsyncIterator[None]:
        """Start-up and shutdown (the app's lifespan)."""
        s = self.settings
        assert self.meter_session is not None
        settle_memory()
        # no local reference to the first model: a reload must be able to free it
        first = self.loaded.describe()
        self.metrics.serving(first["run"], first["variant"], first["row"], first["version"])
        with self.meter_session(self.loaded.run) as meter:
            handle: WindowHandle
            with meter.window("serve") as handle:
                self.batcher = Batcher(
                    s.max_batch_size,
                    s.max_wait_ms / 1000,
                    s.queue_size,
                    EnergyProbe(meter if meter.enabled else NullMeter()),
                    self._on_batch,
                )
                self.batcher.start()
                self._handle_sighup()
                self.started = True
                log.info(
                    "serving %s (%s, row %s, version %s) on %s://%s:%d",
                    first["run"],
                    first["variant"],
                    first["row"],
                    first["version"],
                    "https" if s.ssl_certfile else "http",
                    s.host,
                    s.port,
                )
                try:
                    yield
                finally:
                    self.draining = True  # readyz says 503 from here on
                    self.batcher.stop(s.timeout_s)
            if handle.result is not None:
                handle.result.extra = self.served()
        served = self.served()
        log.info(
            "stopped after %s requests (%s predictions, %.3g J in forward passes, %s)",
            served["requests"],
            served["predictions"],
            served["energy_j"],
            served["kind"],
        )

    def _handle_sighup(self) -> None:
        loop = asyncio.get_running_loop()

        def reload_now() -> None:
            async def go() -> None:
                try:
                    await asyncio.to_thread(self.reload)
                except GreentuneError as exc:
                    log.error("reload on SIGHUP failed, still serving the old model: %s", exc)

            task = loop.create_task(go())
            self._tasks.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self._tasks.discard)

        # only the main thread may handle signals (tests run the app in another thread)
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, reload_now)
