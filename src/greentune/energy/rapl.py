"""CPU package and DRAM energy from the Linux powercap (RAPL) counters in sysfs.

Layout read (Intel, and AMD since Linux 5.8, which reuse the ``intel-rapl`` driver)::

    /sys/class/powercap/intel-rapl:N/{name,energy_uj,max_energy_range_uj}   name: package-N
    /sys/class/powercap/intel-rapl:N/intel-rapl:N:M/...          name: dram | core | uncore

Only package zones and their ``dram`` subzones are summed: ``core`` and ``uncore`` are already
inside the package figure, ``psys`` covers the whole platform (it would double count), and the
``intel-rapl-mmio`` zones mirror the package counters through another interface.

The counters wrap at ``max_energy_range_uj``. A wrap is only caught if the source is updated
(``poll()`` or ``read()``) at least once per wrap period; ``poll_interval_s`` is chosen so that
even at an assumed 1 kW per zone the counter cannot wrap twice between polls.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from greentune.energy.base import SourceKind
from greentune.errors import EnergyError

DEFAULT_ROOT = Path("/sys/class/powercap")
ASSUMED_MAX_POWER_W = 1000.0
"""Ceiling used to size the poll interval: far above any single package or DRAM domain."""
MAX_POLL_INTERVAL_S = 60.0
UJ_PER_J = 1_000_000

_PACKAGE_RE = re.compile(r"^intel-rapl:(\d+)$")
_SUBZONE_RE = re.compile(r"^intel-rapl:(\d+):(\d+)$")

TextOpener = Callable[[Path], str]


def _read_text(path: Path) -> str:
    return path.read_text()


def _permission_message(path: Path) -> str:
    return (
        f"cannot read {path}: RAPL counters are root-only since Linux 5.10 (CVE-2020-8694). "
        "Fix: `sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj "
        "/sys/class/powercap/intel-rapl:*:*/energy_uj` (lasts until reboot; a udev rule makes "
        "it permanent), or set energy.meter=model"
    )


@dataclass
class _Zone:
    """One powercap zone and its running total; raw values are integer microjoules."""

    zone_id: str
    name: str
    component: str
    path: Path
    max_energy_range_uj: int
    last_uj: int = 0
    total_uj: int = 0
    wraps: int = 0


class RaplSource:
    """Cumulative CPU (all packages) and DRAM joules from powercap, wrap-safe and thread-safe."""

    name: str = "rapl"
    kind: SourceKind = "measured"

    def __init__(
        self,
        root: Path = DEFAULT_ROOT,
        clock: Callable[[], float] = time.monotonic,
        *,
        open_text: TextOpener = _read_text,
    ) -> None:
        self.root = Path(root)
        self._clock = clock
        self._open_text = open_text
        self._lock = threading.Lock()
        self._zones = _discover_zones(self.root, open_text)
        for zone in self._zones:
            zone.last_uj = self._read_energy_uj(zone)
        smallest_range_j = min(z.max_energy_range_uj for z in self._zones) / UJ_PER_J
        # Time the fastest-wrapping counter needs to wrap once at the assumed ceiling.
        self._wrap_period_s = smallest_range_j / ASSUMED_MAX_POWER_W
        self.poll_interval_s: float | None = min(self._wrap_period_s, MAX_POLL_INTERVAL_S)
        self._last_update_s = clock()
        self._max_gap_s = 0.0

    def components(self) -> list[str]:
        names = ["cpu"]
        if any(z.component == "dram" for z in self._zones):
            names.append("dram")
        return names

    def read(self) -> dict[str, float]:
        with self._lock:
            self._update()
            totals_uj = dict.fromkeys(self.components(), 0)
            for zone in self._zones:
                totals_uj[zone.component] += zone.total_uj
        # Sum integers first so the only rounding is the one division.
        return {component: uj / UJ_PER_J for component, uj in totals_uj.items()}

    def poll(self) -> None:
        with self._lock:
            self._update()

    def details(self) -> dict[str, object]:
        with self._lock:
            zones = [
                {
                    "zone": z.zone_id,
                    "name": z.name,
                    "component": z.component,
                    "path": str(z.path),
                    "max_energy_range_uj": z.max_energy_range_uj,
                    "wraps": z.wraps,
                }
                for z in self._zones
            ]
            return {
                "root": str(self.root),
                "zones": zones,
                "poll_interval_s": self.poll_interval_s,
                "assumed_max_power_w": ASSUMED_MAX_POWER_W,
                # A gap longer than the wrap period means a double wrap could have gone unseen.
                "max_update_gap_s": self._max_gap_s,
                "wrap_period_at_max_power_s": self._wrap_period_s,
            }

    def close(self) -> None:
        """Nothing to release: files are opened per read."""

    def _update(self) -> None:
        """Fold the current raw counters into the totals; the caller holds the lock."""
        now_s = self._clock()
        self._max_gap_s = max(self._max_gap_s, now_s - self._last_update_s)
        self._last_update_s = now_s
        for zone in self._zones:
            raw_uj = self._read_energy_uj(zone)
            if raw_uj >= zone.last_uj:
                delta_uj = raw_uj - zone.last_uj
            else:
                delta_uj = raw_uj + zone.max_energy_range_uj - zone.last_uj
                zone.wraps += 1
            zone.total_uj += delta_uj
            zone.last_uj = raw_uj

    def _read_energy_uj(self, zone: _Zone) -> int:
        return _read_int(zone.path / "energy_uj", self._open_text)


def _read_int(path: Path, open_text: TextOpener) -> int:
    try:
        text = open_text(path)
    except PermissionError:
        raise EnergyError(_permission_message(path)) from None
    except OSError as exc:
        raise EnergyError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return int(text.strip())
    except ValueError:
        raise EnergyError(f"cannot parse {path}: expected an integer, got {text!r}") from None


def _read_name(path: Path, open_text: TextOpener) -> str:
    try:
        return open_text(path / "name").strip()
    except OSError as exc:
        raise EnergyError(f"cannot read {path / 'name'}: {exc.strerror or exc}") from None


def _discover_zones(root: Path, open_text: TextOpener) -> list[_Zone]:
    """Package zones in index order, each followed by its dram subzones."""
    if not root.is_dir():
        raise EnergyError(
            f"no powercap directory at {root}: RAPL needs Linux with the intel_rapl driver "
            "(Intel, or AMD on Linux >= 5.8); otherwise set energy.meter=model"
        )
    zones: list[_Zone] = []
    for index, path in _package_dirs(root):
        name = _read_name(path, open_text)
        # psys is also a top-level intel-rapl zone but covers the whole platform.
        if not name.startswith("package"):
            continue
        zones.append(_make_zone(path, name, "cpu", open_text))
        for sub_path in _dram_candidates(root, path, index):
            if _read_name(sub_path, open_text) == "dram":
                zones.append(_make_zone(sub_path, "dram", "dram", open_text))
    if not zones:
        raise EnergyError(
            f"no RAPL package zones (intel-rapl:N named package-N) under {root}; "
            "the CPU or kernel does not expose RAPL here, set energy.meter=model"
        )
    return zones


def _package_dirs(root: Path) -> list[tuple[int, Path]]:
    found = []
    for path in root.iterdir():
        match = _PACKAGE_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def _dram_candidates(root: Path, package: Path, index: int) -> list[Path]:
    """Subzones of one package, whether nested in it (sysfs device dir) or linked at the root."""
    by_id: dict[str, Path] = {}
    for parent in (package, root):
        for path in sorted(parent.iterdir()):
            match = _SUBZONE_RE.match(path.name)
            if match and int(match.group(1)) == index and path.name not in by_id:
                by_id[path.name] = path
    return [by_id[key] for key in sorted(by_id, key=lambda k: int(k.rsplit(":", 1)[1]))]


def _make_zone(path: Path, name: str, component: str, open_text: TextOpener) -> _Zone:
    max_range_uj = _read_int(path / "max_energy_range_uj", open_text)
    if max_range_uj <= 0:
        raise EnergyError(f"{path / 'max_energy_range_uj'} is {max_range_uj}; expected > 0")
    return _Zone(
        zone_id=path.name,
        name=name,
        component=component,
        path=path,
        max_energy_range_uj=max_range_uj,
    )


def rapl_available(
    root: Path = DEFAULT_ROOT, *, open_text: TextOpener = _read_text
) -> tuple[bool, str]:
    """Whether RAPL can be read here; the reason says what is missing or how to fix it."""
    try:
        source = RaplSource(root, open_text=open_text)
    except EnergyError as exc:
        return False, str(exc)
    n_packages = sum(1 for z in source._zones if z.component == "cpu")
    n_dram = len(source._zones) - n_packages
    source.close()
    return True, f"{n_packages} package zone(s), {n_dram} dram zone(s) under {root}"
