"""NVIDIA GPU energy through NVML (the ``pynvml`` module of the ``nvidia-ml-py`` package).

Volta and newer GPUs keep a total-energy counter in millijoules; reading it at window edges is
exact and needs no thread. Older GPUs (and some virtualised ones) only report instantaneous
power in milliwatts, so those devices are sampled every ``poll_interval_s`` and integrated with
the trapezoid rule; the estimate is only as good as the sampling rate.

Device indices are NVML indices. NVML ignores ``CUDA_VISIBLE_DEVICES`` and may order devices
differently from CUDA (unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``), so the caller maps visible CUDA
devices to NVML indices and passes them; components keep those indices (``gpu2``, ``gpu3``)
rather than renumbering, so ledger columns name the physical device.

``pynvml`` is imported lazily: importing this module never needs a GPU or a driver.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from greentune.energy.base import SourceKind
from greentune.errors import EnergyError

POWER_POLL_INTERVAL_S = 0.1
MJ_PER_J = 1000
MW_PER_W = 1000

Method = Literal["energy_counter", "power_sampling"]


@dataclass
class _Device:
    """One GPU and its running total; counter values are integer millijoules."""

    index: int
    handle: Any
    name: str
    method: Method
    fallback_reason: str = ""
    last_mj: int = 0
    total_mj: int = 0
    last_power_mw: float = 0.0
    last_time_s: float = 0.0
    sampled_j: float = 0.0
    samples: int = 0

    @property
    def component(self) -> str:
        return f"gpu{self.index}"

    def energy_j(self) -> float:
        if self.method == "energy_counter":
            return self.total_mj / MJ_PER_J
        return self.sampled_j


def _import_pynvml() -> Any:
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        raise EnergyError(
            f"cannot import pynvml ({exc}); install nvidia-ml-py or set energy.meter=model"
        ) from None


def _error_type(nvml: Any) -> type[BaseException]:
    error_type = getattr(nvml, "NVMLError", None)
    return error_type if isinstance(error_type, type) else Exception


def _decode(name: object) -> str:
    # Older pynvml releases return bytes, newer ones str.
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


class NvmlSource:
    """Cumulative joules per NVIDIA GPU: energy counter where supported, else power sampling."""

    name: str = "nvml"
    kind: SourceKind = "measured"

    def __init__(
        self,
        devices: list[int] | None = None,
        nvml: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nvml = _import_pynvml() if nvml is None else nvml
        self._error = _error_type(self._nvml)
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._nvml.nvmlInit()
        except self._error as exc:
            raise EnergyError(
                f"NVML init failed ({exc}): no NVIDIA driver or GPU here; "
                "set energy.meter to rapl or model"
            ) from None
        try:
            self._devices = [self._open_device(i) for i in self._select(devices)]
        except BaseException:
            # Do not leave NVML initialised when the source never comes into being.
            self._shutdown()
            raise
        sampled = any(d.method == "power_sampling" for d in self._devices)
        self.poll_interval_s: float | None = POWER_POLL_INTERVAL_S if sampled else None

    def components(self) -> list[str]:
        return [d.component for d in self._devices]

    def read(self) -> dict[str, float]:
        with self._lock:
            self._update()
            return {d.component: d.energy_j() for d in self._devices}

    def poll(self) -> None:
        with self._lock:
            self._update()

    def details(self) -> dict[str, object]:
        with self._lock:
            devices: list[dict[str, object]] = []
            for d in self._devices:
                entry: dict[str, object] = {
                    "index": d.index,
                    "component": d.component,
                    "name": d.name,
                    "method": d.method,
                }
                if d.method == "power_sampling":
                    entry["fallback_reason"] = d.fallback_reason
                    entry["samples"] = d.samples
                devices.append(entry)
            return {"devices": devices, "poll_interval_s": self.poll_interval_s}

    def close(self) -> None:
        with self._lock:
            self._shutdown()

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        # A failed shutdown leaves nothing to undo: the handles are gone either way.
        with contextlib.suppress(self._error):
            self._nvml.nvmlShutdown()

    def _select(self, devices: list[int] | None) -> list[int]:
        count = self._call("nvmlDeviceGetCount")
        if devices is None:
            return list(range(count))
        if len(set(devices)) != len(devices):
            raise EnergyError(f"NVML device indices {devices} repeat a device (double counting)")
        bad = [i for i in devices if not 0 <= i < count]
        if bad:
            raise EnergyError(
                f"NVML device index {bad} out of range: {count} device(s) visible to NVML "
                "(indices are NVML's, not the renumbered CUDA_VISIBLE_DEVICES ones)"
            )
        return list(devices)

    def _open_device(self, index: int) -> _Device:
        handle = self._call("nvmlDeviceGetHandleByIndex", index)
        name = _decode(self._call("nvmlDeviceGetName", handle))
        try:
            energy_mj = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        except self._error as exc:
            # Pre-Volta GPUs answer NotSupported; power readings still work there.
            device = _Device(index, handle, name, "power_sampling", fallback_reason=str(exc))
            device.last_power_mw = self._power_mw(device)
            device.last_time_s = self._clock()
            device.samples = 1
            return device
        return _Device(index, handle, name, "energy_counter", last_mj=energy_mj)

    def _update(self) -> None:
        """Fold new counter values or power samples into the totals; the caller holds the lock."""
        if self._closed:
            raise EnergyError("NVML source is closed; open a new NvmlSource to keep measuring")
        for d in self._devices:
            if d.method == "energy_counter":
                raw_mj = int(self._call("nvmlDeviceGetTotalEnergyConsumption", d.handle))
                # The counter restarts from 0 when the driver reloads; count what it has since.
                d.total_mj += raw_mj - d.last_mj if raw_mj >= d.last_mj else raw_mj
                d.last_mj = raw_mj
                continue
            power_mw = self._power_mw(d)
            now_s = self._clock()
            duration_s = max(0.0, now_s - d.last_time_s)
            d.sampled_j += (d.last_power_mw + power_mw) / 2 / MW_PER_W * duration_s
            d.last_power_mw, d.last_time_s = power_mw, now_s
            d.samples += 1

    def _power_mw(self, device: _Device) -> float:
        try:
            return float(self._nvml.nvmlDeviceGetPowerUsage(device.handle))
        except self._error as exc:
            raise EnergyError(
                f"cannot read the power of GPU {device.index} ({device.name}) through NVML "
                f"({exc}) and it has no energy counter; set energy.meter=model"
            ) from None

    def _call(self, function: str, *args: Any) -> Any:
        try:
            return getattr(self._nvml, function)(*args)
        except self._error as exc:
            raise EnergyError(f"NVML {function} failed: {exc}") from None


def nvml_available(nvml: Any = None) -> tuple[bool, str]:
    """Whether NVML can measure here; the reason says what is missing."""
    try:
        module = _import_pynvml() if nvml is None else nvml
    except EnergyError as exc:
        return False, str(exc)
    error = _error_type(module)
    try:
        module.nvmlInit()
    except error as exc:
        return False, f"NVML init failed ({exc}): no NVIDIA driver or GPU here"
    try:
        count = int(module.nvmlDeviceGetCount())
    except error as exc:
        return False, f"NVML cannot count devices ({exc})"
    finally:
        # A probe must not fail on cleanup.
        with contextlib.suppress(error):
            module.nvmlShutdown()
    if count == 0:
        return False, "NVML sees 0 GPUs"
    return True, f"NVML sees {count} GPU(s)"
