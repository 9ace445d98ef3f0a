"""Energy and carbon: meters with nestable windows, sources, carbon providers, the ledger.

``build_meter(cfg.energy, command)`` picks the sources (``energy.meter``) and the carbon
provider (``energy.carbon``); commands wrap their phases in ``meter.window(...)`` and add the
meter's results to the run's ``Ledger``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from greentune.config import EnergyConfig
from greentune.energy.base import EnergySource, IntensityProvider
from greentune.energy.meter import FakeSource, Meter, NullMeter, WindowResult
from greentune.errors import EnergyError
from greentune.registry import Registry

__all__ = [
    "ENERGY_SOURCES",
    "FakeSource",
    "Meter",
    "NullMeter",
    "WindowResult",
    "build_meter",
    "build_provider",
    "build_sources",
]

SourceFactory = Callable[[EnergyConfig, bool], EnergySource]
ENERGY_SOURCES: Registry[SourceFactory] = Registry("energy source")


@ENERGY_SOURCES.register("rapl")
def _rapl(cfg: EnergyConfig, children: bool) -> EnergySource:
    from greentune.energy.rapl import RaplSource

    return RaplSource(Path(cfg.rapl_root))


@ENERGY_SOURCES.register("nvml")
def _nvml(cfg: EnergyConfig, children: bool) -> EnergySource:
    from greentune.energy.nvml import NvmlSource

    return NvmlSource(devices=_own_gpu())


def _own_gpu() -> list[int] | None:
    """The GPUs this process bills (NVML indices): the ones ``CUDA_VISIBLE_DEVICES`` gives it
    (a scheduler such as Slurm sets it on a shared node, where the other GPUs run other
    users' jobs), one per rank with several processes on a node; None (every GPU) only when
    nothing narrows it. Visible devices given as UUIDs or MIG names are not mapped: every GPU
    then (one process) or the rank's index (several)."""
    from greentune.distributed import ranks

    local_rank, local_world = ranks.local_rank(), ranks.local_world_size()
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    visible = [v for v in visible if v]
    numbered = bool(visible) and all(v.isdigit() for v in visible)
    if local_world == 1:
        return [int(v) for v in visible] if numbered else None
    if numbered:
        return [int(visible[local_rank % len(visible)])]
    return [local_rank]


@ENERGY_SOURCES.register("model")
def _model(cfg: EnergyConfig, children: bool) -> EnergySource:
    from greentune.energy.model import ProcessModelSource, resolve_cpu_power

    cpu = resolve_cpu_power(cfg.cpu_power_per_thread_w)
    return ProcessModelSource(cpu, cfg.memory_power_per_gb_w, children=children)


def auto_source_names(cfg: EnergyConfig) -> tuple[list[str], list[str]]:
    """Names of the sources ``auto`` picks, and why each other one was left out."""
    from greentune.energy.nvml import nvml_available
    from greentune.energy.rapl import rapl_available

    names, notes = [], []
    rapl_ok, why = rapl_available(Path(cfg.rapl_root))
    if rapl_ok:
        names.append("rapl")
    else:
        names.append("model")
        notes.append(f"RAPL not used ({why}): CPU and memory are modelled")
    nvml_ok, why = nvml_available()
    if nvml_ok:
        names.append("nvml")
    else:
        notes.append(f"NVML not used ({why})")
    return names, notes


def build_sources(
    cfg: EnergyConfig, children: bool = False
) -> tuple[list[EnergySource], list[str]]:
    if cfg.meter.strip() == "auto":
        names, notes = auto_source_names(cfg)
    else:
        names = [n.strip() for n in cfg.meter.split(",") if n.strip()]
        notes = []
        for name in names:
            ENERGY_SOURCES.get(name)  # unknown names fail before any is opened
    from greentune.distributed import ranks  # torch: only once sources are built

    local_rank, local_world = ranks.local_rank(), ranks.local_world_size()
    if "rapl" in names and local_world > 1 and local_rank != 0:
        # RAPL counts the whole machine: one reader per node, or every rank would bill it all
        names = [n for n in names if n != "rapl"]
        notes.append("RAPL is machine-wide: local rank 0 reads it for the whole node")
    sources: list[EnergySource] = []
    try:
        for name in names:
            sources.append(ENERGY_SOURCES.get(name)(cfg, children))
    except BaseException:
        for source in sources:
            source.close()
        raise
    return sources, notes


def build_provider(cfg: EnergyConfig) -> IntensityProvider:
    from greentune.energy.carbon import parse_provider_spec, with_fallback

    provider = parse_provider_spec(cfg.carbon)
    if cfg.carbon_fallback:
        provider = with_fallback(provider, parse_provider_spec(cfg.carbon_fallback))
    return provider


def build_meter(cfg: EnergyConfig, command: str, children: bool = False) -> tuple[Meter, list[str]]:
    """The meter for one command, and notes on how its sources were chosen."""
    if not cfg.enabled:
        raise EnergyError("energy metering is off (energy.enabled=false)")
    provider = build_provider(cfg)
    sources, notes = build_sources(cfg, children)
    # a local rank other than 0 whose only source was RAPL (machine-wide, read by rank 0)
    # meters nothing itself, but still times its windows and joins the ranks' gather
    from greentune.distributed import ranks

    left_to_rank_0 = ranks.local_world_size() > 1 and ranks.local_rank() != 0
    meter = Meter(sources, provider, pue=cfg.pue, command=command, allow_empty=left_to_rank_0)
    try:
        meter.check_coverage()
    except BaseException:
        meter.close()
        raise
    return meter, notes
