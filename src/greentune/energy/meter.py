"""The meter: named, nestable windows that return what the work inside them cost (Zeus design).

    with meter.window("train") as w:
        with meter.window("epoch-0"):      # recorded as "train/epoch-0"
            run_epoch()
    w.result.energy_j, w.result.emissions_g

A window costs one read of every source at each edge; nothing runs in between unless a source
asks to be polled (RAPL wrap-around, NVML power sampling, the model following child processes),
and then one daemon thread polls them all. With a journal attached (``attach_journal``) every
window's opening and closing, and a reading every ``interval_s``, go to disk as they happen
(greentune.energy.journal), so a crash keeps what was spent.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from greentune import faults
from greentune.energy.base import EnergySource, IntensityProvider, SourceKind, kind_of
from greentune.errors import EnergyError

log = logging.getLogger("greentune.energy.meter")

if TYPE_CHECKING:
    from greentune.energy.journal import Journal

WallClock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class WindowResult:
    """One ledger row: what one window of work cost."""

    window: str
    """Full name, nested names joined by '/': 'train/epoch-3'."""
    phase: str
    """First part of the name: data, train, test, baseline, evaluate, predict, measure."""
    parent: str | None
    depth: int
    command: str
    rank: int
    start: str
    """ISO 8601, UTC."""
    end: str
    duration_s: float
    energy_j: dict[str, float]
    """Per component: cpu, dram, gpu0, ..."""
    sources: dict[str, str]
    """Per component: which source produced it (rapl, nvml, model, fake)."""
    kind: str
    """'measured', 'model', or 'mixed' when components disagree."""
    intensity_g_per_kwh: float | None
    """Time-weighted mean grid intensity over the window (None: no provider)."""
    emissions_g: float | None
    pue: float = 1.0
    ok: bool = True
    """False when the work inside the window raised."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_j(self) -> float:
        return sum(self.energy_j.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WindowHandle:
    name: str
    result: WindowResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Notes for the window's ledger row (``extra``), set while it is open."""


class NullMeter:
    """Metering switched off (``energy.enabled=false``): windows run their work and record
    nothing, so callers never branch on whether a meter exists."""

    enabled = False

    def __init__(self, command: str = "run") -> None:
        self.command = command
        self.sources: list[EnergySource] = []
        self.results: list[WindowResult] = []

    @contextmanager
    def window(self, name: str) -> Iterator[WindowHandle]:
        faults.point(name)
        yield WindowHandle(name)

    def tick(self) -> None:
        """Nothing to journal."""

    def read(self) -> dict[str, float]:
        return {}

    @property
    def kind(self) -> str:
        return "off"

    def details(self) -> dict[str, Any]:
        return {"enabled": False}

    def close(self) -> None:
        """Nothing to release."""


class Meter:
    """Reads every source at window edges and prices the energy with the intensity provider."""

    enabled = True

    def __init__(
        self,
        sources: list[EnergySource],
        provider: IntensityProvider | None = None,
        pue: float = 1.0,
        command: str = "run",
        rank: int | None = None,
        wall_clock: WallClock = utc_now,
        clock: Callable[[], float] = time.perf_counter,
        allow_empty: bool = False,
    ) -> None:
        if not sources and not allow_empty:
            raise EnergyError("a meter needs at least one energy source")
        owners: dict[str, EnergySource] = {}
        for source in sources:
            for comp in source.components():
                if comp in owners:
                    raise EnergyError(
                        f"component {comp!r} comes from both {owners[comp].name} and "
                        f"{source.name}; keep one of them"
                    )
                owners[comp] = source
        self.sources = sources
        self.owners = owners
        self.provider = provider
        self.pue = pue
        self.command = command
        if rank is None:
            from greentune.distributed import ranks  # torch: only once a meter is built

            rank = ranks.global_rank()
        self.rank = rank
        self.results: list[WindowResult] = []
        self._wall = wall_clock
        self._clock = clock
        self._stack: list[str] = []
        self._stop = threading.Event()
        self._sources_lock = threading.Lock()  # edges, polls and journal ticks share the sources
        self._poller = self._start_poller()
        self.journal: Journal | None = None
        self._ticker: threading.Thread | None = None

    def window(self, name: str) -> Any:
        """Context manager; the handle's ``result`` is set (and appended to ``results``) on exit,
        also when the work raised."""
        return self._window(name)

    @contextmanager
    def _window(self, name: str) -> Iterator[WindowHandle]:
        full = "/".join([*self._stack, name]) if self._stack else name
        handle = WindowHandle(full)
        parent = "/".join(self._stack) if self._stack else None
        depth = len(self._stack)
        self._stack.append(name)
        if self.journal is not None:
            # journaled (an fsync) before the window's own first reading, so the window's
            # time and energy hold only the work inside it
            self.journal.write(
                {
                    "type": "open",
                    "window": full,
                    "parent": parent,
                    "depth": depth,
                    "start": self._wall().isoformat(),
                    "energy_j": self._read(),
                }
            )
        start_wall, start_t, start_j = self._wall(), self._clock(), self._read()
        ok = False
        try:
            faults.point(full)
            yield handle
            ok = True
        finally:
            end_j, end_t, end_wall = self._read(), self._clock(), self._wall()
            self._stack.pop()
            handle.result = self._result(
                full, parent, depth, (start_wall, end_wall), end_t - start_t, start_j, end_j, ok
            )
            handle.result.extra.update(handle.extra)
            self.results.append(handle.result)
            if self.journal is not None:
                self.journal.write({"type": "row", **handle.result.to_dict()})

    def attach_journal(self, journal: Journal, interval_s: float) -> None:
        """Journal every window from now on, and a reading every ``interval_s`` (0: only when
        ``tick`` is called, e.g. at training checkpoints)."""
        self.journal = journal
        if interval_s > 0:

            def loop() -> None:
                while not self._stop.wait(interval_s):
                    self.tick()

            self._ticker = threading.Thread(target=loop, name="greentune-journal", daemon=True)
            self._ticker.start()

    def tick(self) -> None:
        """Journal the sources' cumulative readings now (open windows are priced from it if
        the process dies before they close)."""
        if self.journal is not None:
            reading = self._read()
            self.journal.write(
                {"type": "tick", "time": self._wall().isoformat(), "energy_j": reading}
            )

    def _result(
        self,
        full: str,
        parent: str | None,
        depth: int,
        walls: tuple[dt.datetime, dt.datetime],
        duration_s: float,
        start_j: dict[str, float],
        end_j: dict[str, float],
        ok: bool,
    ) -> WindowResult:
        energy = {c: max(0.0, end_j[c] - start_j[c]) for c in self.owners}
        extra: dict[str, Any] = {}
        try:
            intensity, grams = self.price(sum(energy.values()), *walls)
        except EnergyError as exc:
            # the start was checked, so the work ran; an API that fails later (a timeout, a
            # trace ending mid-run) must not turn finished work into a failure or lose the
            # window's energy: the row keeps it, unpriced, and says why
            intensity, grams = None, None
            extra["pricing_error"] = str(exc)
            log.warning("window %s: energy kept, emissions not priced: %s", full, exc)
        return WindowResult(
            window=full,
            phase=full.split("/", 1)[0],
            parent=parent,
            depth=depth,
            command=self.command,
            rank=self.rank,
            start=walls[0].isoformat(),
            end=walls[1].isoformat(),
            duration_s=duration_s,
            energy_j=energy,
            sources={c: self.owners[c].name for c in energy},
            # no component (a rank whose node RAPL is read by local rank 0): no kind, which
            # summaries skip, rather than 'mixed'
            kind=kind_of(self.owners[c].kind for c in energy) or ("mixed" if energy else ""),
            intensity_g_per_kwh=intensity,
            emissions_g=grams,
            pue=self.pue,
            ok=ok,
            extra=extra,
        )

    def price(
        self, energy_j: float, start: dt.datetime, end: dt.datetime
    ) -> tuple[float | None, float | None]:
        """(mean intensity, emissions) of energy spent evenly over [start, end)."""
        if self.provider is None:
            return None, None
        from greentune.energy.carbon import emissions_g

        grams, intensity = emissions_g(energy_j, start, end, self.provider, self.pue)
        return intensity, grams

    def check_coverage(self) -> None:
        """Fail before the work starts when the provider cannot price the present."""
        now = self._wall()
        self.price(0.0, now, now + dt.timedelta(seconds=1))

    def details(self) -> dict[str, Any]:
        return {
            "sources": {s.name: {"kind": s.kind, **s.details()} for s in self.sources},
            "carbon": self.provider.describe() if self.provider else None,
            "pue": self.pue,
        }

    def read(self) -> dict[str, float]:
        """Cumulative joules per component now (differences of two readings are energy)."""
        return self._read()

    @property
    def kind(self) -> str:
        """measured, model, or mixed: how this meter's joules are obtained."""
        return kind_of(s.kind for s in self.sources) or ("mixed" if self.sources else "")

    def _read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        with self._sources_lock:
            for source in self.sources:
                out.update(source.read())
        return out

    def owners_record(self) -> dict[str, list[str]]:
        """{component: [source name, kind]}: what a journal needs to label rows it rebuilds."""
        return {c: [s.name, s.kind] for c, s in self.owners.items()}

    def _start_poller(self) -> threading.Thread | None:
        intervals = [s.poll_interval_s for s in self.sources if s.poll_interval_s]
        if not intervals:
            return None
        interval = min(intervals)
        polled = [s for s in self.sources if s.poll_interval_s]

        def loop() -> None:
            while not self._stop.wait(interval):
                with self._sources_lock:
                    for source in polled:
                        source.poll()

        thread = threading.Thread(target=loop, name="greentune-energy-poll", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._stop.set()
        for thread in (self._poller, self._ticker):
            if thread is not None:
                thread.join(timeout=5)
        for source in self.sources:
            source.close()

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FakeSource:
    """Deterministic readings for tests: each read adds ``watts`` x the fake clock's advance."""

    name = "fake"

    def __init__(
        self,
        clock: Callable[[], float],
        watts: dict[str, float] | None = None,
        kind: SourceKind = "measured",
    ) -> None:
        self.kind = kind
        self.poll_interval_s: float | None = None
        self._clock = clock
        self._watts = watts or {"cpu": 10.0}
        self._t0 = clock()

    def components(self) -> list[str]:
        return list(self._watts)

    def read(self) -> dict[str, float]:
        elapsed = self._clock() - self._t0
        return {c: w * elapsed for c, w in self._watts.items()}

    def poll(self) -> None:
        pass

    def details(self) -> dict[str, object]:
        return {"watts": dict(self._watts)}

    def close(self) -> None:
        pass
