"""The process model: TDP look-up, the VM rule, exact joules with injected readings."""

from __future__ import annotations

import os
import time

import psutil
import pytest

from greentune.energy.model import (
    DEFAULT_MEMORY_POWER_PER_GB_W,
    DEFAULT_POWER_PER_THREAD_W,
    ProcessModelSource,
    load_tdp_table,
    match_tdp,
    resolve_cpu_power,
)
from tests.unit.energy.fakes import FakeClock

TABLE = {
    "Intel Xeon Gold 6126": 125.0,
    "Intel Xeon Gold 6126T": 125.0,
    "AMD EPYC 7763": 280.0,
    "Intel Xeon": 99.0,  # no model number: never a fuzzy match
}


@pytest.mark.parametrize(
    ("name", "entry"),
    [
        ("Intel(R) Xeon(R) Gold 6126 CPU @ 2.60GHz", "Intel Xeon Gold 6126"),
        ("AMD EPYC 7763 64-Core Processor", "AMD EPYC 7763"),
        ("Intel(R) Xeon(R) Processor", None),
        ("Intel(R) Xeon(R) Gold 6126T CPU @ 2.60GHz", "Intel Xeon Gold 6126T"),
    ],
)
def test_cpu_names_match_the_most_specific_entry(name, entry):
    found = match_tdp(name, TABLE)
    assert (found[0] if found else None) == entry


def test_codecarbon_table_is_read():
    table = load_tdp_table()
    assert len(table) > 4000
    assert match_tdp("AMD EPYC 7763 64-Core Processor", table) == ("AMD EPYC 7763", 280.0)


def test_bare_metal_power_is_tdp_per_thread():
    info = {"model name": "AMD EPYC 7763 64-Core Processor", "siblings": "128", "flags": "avx2"}
    cpu = resolve_cpu_power(info=info, table=TABLE)
    assert cpu.power_per_thread_w == pytest.approx(280.0 / 128)
    assert cpu.matched_entry == "AMD EPYC 7763" and cpu.tdp_w == 280.0


def test_a_vm_uses_the_per_thread_default_even_when_the_model_matches():
    info = {"model name": "AMD EPYC 7763 64-Core Processor", "siblings": "2", "flags": "hypervisor"}
    cpu = resolve_cpu_power(info=info, table=TABLE)
    assert cpu.power_per_thread_w == DEFAULT_POWER_PER_THREAD_W == 4.0
    assert cpu.matched_entry == "AMD EPYC 7763" and "VM" in cpu.how


def test_unknown_cpu_and_explicit_power():
    unknown = resolve_cpu_power(info={"model name": "Intel(R) Xeon(R) Processor"}, table=TABLE)
    assert unknown.power_per_thread_w == 4.0 and unknown.matched_entry is None
    assert "no entry" in unknown.how
    given = resolve_cpu_power(7.5, info={"model name": "x"}, table=TABLE)
    assert given.power_per_thread_w == 7.5 and given.how == "energy.cpu_power_per_thread_w"


def test_model_source_turns_cpu_seconds_and_memory_into_exact_joules():
    clock = FakeClock()
    cpu_s = [100.0]
    rss = [2e9]
    cpu = resolve_cpu_power(5.0, info={"model name": "x"}, table=TABLE)
    source = ProcessModelSource(
        cpu, 0.5, cpu_seconds=lambda: cpu_s[0], rss_bytes=lambda: rss[0], clock=clock
    )
    clock.advance(10)
    cpu_s[0] += 3.0
    rss[0] = 4e9
    reading = source.read()
    assert reading["cpu"] == pytest.approx(15.0)  # 3 CPU s x 5 W
    assert reading["dram"] == pytest.approx(3.0 * 0.5 * 10)  # mean 3 GB x 0.5 W/GB x 10 s
    assert source.kind == "model" and source.poll_interval_s is None
    assert ProcessModelSource(cpu, children=True).poll_interval_s == 1.0


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def test_model_source_counts_real_work_of_this_process():
    """The default readers: this process's CPU seconds x W per thread, and its resident memory
    x W per GB x wall time, bracketed by readings taken just outside and just inside."""
    cpu = resolve_cpu_power(4.0, info={"model name": "x"}, table=TABLE)
    me = psutil.Process()
    cpu_out0, t_out0, rss0 = _cpu_s(), time.monotonic(), me.memory_info().rss
    source = ProcessModelSource(cpu)
    cpu_in0, t_in0 = _cpu_s(), time.monotonic()
    sum(i * i for i in range(3_000_000))
    cpu_in1, t_in1 = _cpu_s(), time.monotonic()
    reading = source.read()
    cpu_out1, t_out1, rss1 = _cpu_s(), time.monotonic(), me.memory_info().rss
    assert cpu_in1 - cpu_in0 >= 0.05  # the work took CPU time that the clock ticks can see
    assert 4.0 * (cpu_in1 - cpu_in0) <= reading["cpu"] <= 4.0 * (cpu_out1 - cpu_out0)
    gb = sorted((rss0 / 1e9, rss1 / 1e9))
    w_per_gb = DEFAULT_MEMORY_POWER_PER_GB_W
    low, high = (
        0.95 * gb[0] * w_per_gb * (t_in1 - t_in0),
        1.05 * gb[1] * w_per_gb * (t_out1 - t_out0),
    )
    assert low <= reading["dram"] <= high
