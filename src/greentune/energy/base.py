"""What every energy source and carbon-intensity provider offers the meter.

Energy sources report *cumulative* joules per component since they were opened; the meter
subtracts readings at window edges, so a window costs two reads and nothing in between.
Sources whose counters wrap or that integrate power samples set ``poll_interval_s``; the meter
then runs one background thread that calls ``poll()`` that often.

Component names are short and CSV-friendly: ``cpu`` (all CPU packages), ``dram``, ``gpu0``,
``gpu1``, ... A ledger column is ``energy_<component>_j``.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from greentune.errors import EnergyError

SourceKind = Literal["measured", "model"]
J_PER_KWH = 3.6e6


def kind_of(kinds: Iterable[str | None]) -> str | None:
    """The one word an energy figure summed over rows or components carries: their common kind
    (measured, model, estimated), 'mixed' when they differ, None when there is nothing."""
    found = {k for k in kinds if k}
    if not found:
        return None
    return found.pop() if len(found) == 1 else "mixed"


def kind_header(unit: str, kinds: Iterable[str | None]) -> str:
    """A column header that says how its energy figures were obtained: 'Wh (model)'."""
    kind = kind_of(kinds)
    return f"{unit} ({kind})" if kind else unit


class EnergySource(Protocol):
    """A counter (RAPL, NVML) or a model that yields cumulative joules per component."""

    name: str
    """Registry name: 'rapl', 'nvml', 'model', 'fake'."""
    kind: SourceKind
    """'measured' for hardware counters, 'model' for estimates; never mixed up in the ledger."""
    poll_interval_s: float | None
    """None: reads at window edges suffice; otherwise call ``poll()`` this often."""

    def components(self) -> list[str]:
        """Component names this source reports (stable for the source's lifetime)."""
        ...

    def read(self) -> dict[str, float]:
        """Cumulative joules per component since the source was opened (non-decreasing)."""
        ...

    def poll(self) -> None:
        """Cheap update between edges: catch counter wrap-around, integrate a power sample."""
        ...

    def details(self) -> dict[str, object]:
        """What a reader of the ledger needs to trust the numbers (paths, constants, matches)."""
        ...

    def close(self) -> None:
        """Release handles (NVML shutdown, files)."""
        ...


@dataclass(frozen=True)
class Segment:
    """A stretch of time with one carbon intensity (gCO2e/kWh); times are UTC-aware."""

    start: dt.datetime
    end: dt.datetime
    intensity_g_per_kwh: float


class IntensityProvider(Protocol):
    """Grid carbon intensity over time (a registry family: static, fixed, trace, live APIs)."""

    name: str

    def describe(self) -> str:
        """One line for the ledger: what the numbers are and where they come from."""
        ...

    def segments(self, start: dt.datetime, end: dt.datetime) -> list[Segment]:
        """Piecewise-constant intensity covering [start, end) exactly, in time order.

        Raises EnergyError naming the source and its coverage when [start, end) is not covered.
        """
        ...


def codecarbon_data_path(*parts: str) -> Path:
    """A file of the tables CodeCarbon ships (CPU TDPs, country intensities).

    find_spec locates the package without running codecarbon/__init__.py, which imports the whole
    tracker (psutil, GPU probes); importlib.resources.files("codecarbon") would run it.
    """
    spec = importlib.util.find_spec("codecarbon")
    if spec is None or not spec.submodule_search_locations:
        raise EnergyError(
            "the codecarbon package is not installed; greentune reads its CPU and carbon "
            "tables (pip install codecarbon), or set energy.cpu_power_per_thread_w and "
            "energy.carbon=fixed:<g/kWh>"
        )
    return Path(next(iter(spec.submodule_search_locations))).joinpath("data", *parts)
