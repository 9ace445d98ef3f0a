"""NvmlSource against a fake pynvml module: energy counter, power sampling, lifecycle, probes."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from greentune.energy.nvml import NvmlSource, nvml_available
from greentune.errors import EnergyError


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


class FakeNvml:
    """GPU 0 has an energy counter (mJ); GPU 1 only reports power (mW); GPU 2 reports nothing."""

    class NVMLError(Exception):
        pass

    def __init__(self, count: int = 2, init_fails: bool = False) -> None:
        self.count = count
        self.init_fails = init_fails
        self.init_calls = 0
        self.shutdown_calls = 0
        self.energy_mj = {0: 5_000_000}
        self.power_mw = {0: 50_000, 1: 100_000}
        self.names: dict[int, Any] = {0: b"NVIDIA H100 80GB HBM3", 1: "Tesla P100-PCIE-16GB"}

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_fails:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> tuple[str, int]:
        if not 0 <= index < self.count:
            raise self.NVMLError("Invalid Argument")
        return ("handle", index)

    def nvmlDeviceGetName(self, handle: tuple[str, int]) -> Any:
        return self.names.get(handle[1], f"GPU {handle[1]}")

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: tuple[str, int]) -> int:
        if handle[1] not in self.energy_mj:
            raise self.NVMLError("Not Supported")
        return self.energy_mj[handle[1]]

    def nvmlDeviceGetPowerUsage(self, handle: tuple[str, int]) -> int:
        if handle[1] not in self.power_mw:
            raise self.NVMLError("Not Supported")
        return self.power_mw[handle[1]]


def test_energy_counter_and_power_sampling_give_exact_joules() -> None:
    nvml, clock = FakeNvml(), Clock()
    source = NvmlSource(nvml=nvml, clock=clock)
    assert source.name == "nvml" and source.kind == "measured"
    assert source.components() == ["gpu0", "gpu1"]
    assert source.poll_interval_s == 0.1
    assert source.read() == {"gpu0": 0.0, "gpu1": 0.0}

    nvml.energy_mj[0] = 5_001_500  # +1.5 J
    clock.now_s, nvml.power_mw[1] = 2.0, 200_000
    source.poll()  # trapezoid: (100 W + 200 W) / 2 * 2 s = 300 J
    clock.now_s = 3.0
    assert source.read() == {"gpu0": 1.5, "gpu1": 500.0}  # + 200 W * 1 s

    clock.now_s, nvml.power_mw[1] = 3.5, 0
    nvml.energy_mj[0] = 5_004_000
    assert source.read() == {"gpu0": 4.0, "gpu1": 550.0}  # + (200 W + 0 W) / 2 * 0.5 s


def test_details_list_names_and_methods() -> None:
    details = NvmlSource(nvml=FakeNvml(), clock=Clock()).details()
    assert details["poll_interval_s"] == 0.1
    assert details["devices"] == [
        {
            "index": 0,
            "component": "gpu0",
            "name": "NVIDIA H100 80GB HBM3",
            "method": "energy_counter",
        },
        {
            "index": 1,
            "component": "gpu1",
            "name": "Tesla P100-PCIE-16GB",
            "method": "power_sampling",
            "fallback_reason": "Not Supported",
            "samples": 1,
        },
    ]


def test_selected_devices_keep_their_indices() -> None:
    nvml = FakeNvml(count=4)
    nvml.energy_mj = {0: 0, 1: 0, 2: 0, 3: 7_000}
    source = NvmlSource(devices=[3, 1], nvml=nvml, clock=Clock())
    assert source.components() == ["gpu3", "gpu1"]
    assert source.poll_interval_s is None  # counters only: no thread needed
    nvml.energy_mj[3] = 9_500
    assert source.read() == {"gpu3": 2.5, "gpu1": 0.0}


def test_counter_only_needs_no_polling() -> None:
    assert NvmlSource(devices=[0], nvml=FakeNvml(), clock=Clock()).poll_interval_s is None


def test_close_shuts_down_once() -> None:
    nvml = FakeNvml()
    source = NvmlSource(nvml=nvml, clock=Clock())
    source.close()
    source.close()
    assert (nvml.init_calls, nvml.shutdown_calls) == (1, 1)
    with pytest.raises(EnergyError, match="closed"):
        source.read()


def test_bad_index_raises_and_shuts_down() -> None:
    nvml = FakeNvml()
    with pytest.raises(EnergyError, match=r"out of range: 2 device\(s\)"):
        NvmlSource(devices=[0, 5], nvml=nvml)
    assert nvml.shutdown_calls == 1
    with pytest.raises(EnergyError, match="repeat"):
        NvmlSource(devices=[1, 1], nvml=nvml)


def test_device_without_counter_or_power_raises_and_shuts_down() -> None:
    nvml = FakeNvml(count=3)
    with pytest.raises(EnergyError, match=r"GPU 2 \(GPU 2\).*energy.meter=model"):
        NvmlSource(nvml=nvml)
    assert nvml.shutdown_calls == 1


def test_init_failure_is_an_energy_error() -> None:
    with pytest.raises(EnergyError, match="NVML init failed"):
        NvmlSource(nvml=FakeNvml(init_fails=True))


def test_power_failure_during_poll_is_an_energy_error() -> None:
    nvml = FakeNvml()
    source = NvmlSource(nvml=nvml, clock=Clock())
    del nvml.power_mw[1]
    with pytest.raises(EnergyError, match="cannot read the power of GPU 1"):
        source.poll()


def test_available_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml()
    assert nvml_available(nvml) == (True, "NVML sees 2 GPU(s)")
    assert nvml.shutdown_calls == 1

    ok, reason = nvml_available(FakeNvml(init_fails=True))
    assert not ok and "Driver Not Loaded" in reason

    empty = FakeNvml(count=0)
    assert nvml_available(empty) == (False, "NVML sees 0 GPUs")
    assert empty.shutdown_calls == 1

    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    ok, reason = nvml_available()
    assert not ok and "nvidia-ml-py" in reason
    with pytest.raises(EnergyError, match="cannot import pynvml"):
        NvmlSource()


@pytest.mark.parametrize(
    ("visible", "local_rank", "local_world", "billed"),
    [
        (None, 0, 1, None),  # nothing narrows it: every GPU
        ("3,5", 0, 1, [3, 5]),  # one process on a shared node: its own GPUs only
        ("3,5", 1, 2, [5]),  # several ranks: one each
        (None, 1, 2, [1]),
        ("GPU-8f1c", 0, 1, None),  # UUIDs are not mapped
    ],
)
def test_the_gpus_a_process_bills(monkeypatch, visible, local_rank, local_world, billed) -> None:
    from greentune.energy import _own_gpu

    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))
    assert _own_gpu() == billed
