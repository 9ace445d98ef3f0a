"""RaplSource against a fake powercap tree: exact joules, wrap-around, discovery, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from greentune.energy.rapl import RaplSource, rapl_available
from greentune.errors import EnergyError

BIG_RANGE_UJ = 262_143_328_850  # a real package range: ~262 kJ, wraps in ~4 min at 1 kW


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def make_zone(path: Path, name: str, energy_uj: int, range_uj: int = BIG_RANGE_UJ) -> Path:
    path.mkdir(parents=True)
    (path / "name").write_text(f"{name}\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{range_uj}\n")
    return path


def set_uj(path: Path, energy_uj: int) -> None:
    (path / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """Two packages (dram under package 0), plus zones that must be ignored.

    Subzones are nested in their package and linked at the root, as in real sysfs.
    """
    root = tmp_path / "powercap"
    zones = {"root": root}
    zones["pkg0"] = make_zone(root / "intel-rapl:0", "package-0", 1_000_000)
    zones["core0"] = make_zone(zones["pkg0"] / "intel-rapl:0:0", "core", 10)
    zones["dram0"] = make_zone(zones["pkg0"] / "intel-rapl:0:1", "dram", 2_000_000)
    zones["pkg1"] = make_zone(root / "intel-rapl:1", "package-1", 3_000_000)
    zones["core1"] = make_zone(zones["pkg1"] / "intel-rapl:1:0", "core", 20)
    zones["psys"] = make_zone(root / "intel-rapl:2", "psys", 30)
    zones["mmio"] = make_zone(root / "intel-rapl-mmio:0", "package-0", 40)
    for name in ("intel-rapl:0:0", "intel-rapl:0:1"):
        (root / name).symlink_to(zones["pkg0"] / name)
    (root / "intel-rapl:1:0").symlink_to(zones["pkg1"] / "intel-rapl:1:0")
    return zones


def test_exact_joules_from_packages_and_dram_only(tree: dict[str, Path]) -> None:
    source = RaplSource(tree["root"], clock=Clock())
    assert source.name == "rapl" and source.kind == "measured"
    assert source.components() == ["cpu", "dram"]
    assert source.read() == {"cpu": 0.0, "dram": 0.0}

    set_uj(tree["pkg0"], 2_500_000)  # +1.5 J
    set_uj(tree["pkg1"], 5_250_000)  # +2.25 J
    set_uj(tree["dram0"], 2_500_000)  # +0.5 J
    for ignored in ("core0", "core1", "psys", "mmio"):
        set_uj(tree[ignored], 99_000_000)
    assert source.read() == {"cpu": 3.75, "dram": 0.5}

    set_uj(tree["pkg1"], 6_250_000)  # +1 J more, cumulative
    assert source.read() == {"cpu": 4.75, "dram": 0.5}


def test_details_names_the_zones_used(tree: dict[str, Path]) -> None:
    details = RaplSource(tree["root"]).details()
    zones = details["zones"]
    assert isinstance(zones, list)
    assert [(z["zone"], z["name"], z["component"]) for z in zones] == [
        ("intel-rapl:0", "package-0", "cpu"),
        ("intel-rapl:0:1", "dram", "dram"),
        ("intel-rapl:1", "package-1", "cpu"),
    ]
    assert zones[0]["path"] == str(tree["pkg0"])
    assert details["root"] == str(tree["root"])


def test_wrap_around_adds_the_exact_delta(tmp_path: Path) -> None:
    pkg = make_zone(tmp_path / "intel-rapl:0", "package-0", 999_000_000, range_uj=1_000_000_000)
    source = RaplSource(tmp_path, clock=Clock())
    set_uj(pkg, 500_000)  # 1_000_000 to the top, then 500_000 past zero
    assert source.read() == {"cpu": 1.5}
    set_uj(pkg, 2_500_000)
    assert source.read() == {"cpu": 3.5}
    assert source.details()["zones"] == [
        {
            "zone": "intel-rapl:0",
            "name": "package-0",
            "component": "cpu",
            "path": str(pkg),
            "max_energy_range_uj": 1_000_000_000,
            "wraps": 1,
        }
    ]


def test_poll_catches_a_wrap_that_a_single_read_would_miss(tmp_path: Path) -> None:
    pkg = make_zone(tmp_path / "intel-rapl:0", "package-0", 999_000_000, range_uj=1_000_000_000)
    source = RaplSource(tmp_path, clock=Clock())
    set_uj(pkg, 500_000)
    source.poll()
    set_uj(pkg, 998_000_000)
    # 1.5 J before the poll, then 997.5 J; without the poll this would look like one wrap.
    assert source.read() == {"cpu": 999.0}


def test_poll_interval_capped_at_60_s(tree: dict[str, Path]) -> None:
    assert RaplSource(tree["root"]).poll_interval_s == 60.0


def test_poll_interval_from_smallest_range_at_1_kw(tmp_path: Path) -> None:
    pkg = make_zone(tmp_path / "intel-rapl:0", "package-0", 0, range_uj=65_000_000_000)
    make_zone(pkg / "intel-rapl:0:0", "dram", 0, range_uj=32_000_000_000)
    source = RaplSource(tmp_path)
    assert source.components() == ["cpu", "dram"]
    assert source.poll_interval_s == 32.0  # 32 kJ / 1 kW


def test_no_dram_means_cpu_only(tmp_path: Path) -> None:
    pkg = make_zone(tmp_path / "intel-rapl:0", "package-0", 0)
    make_zone(pkg / "intel-rapl:0:0", "core", 0)
    assert RaplSource(tmp_path).components() == ["cpu"]


def test_update_gap_tracked_by_clock(tree: dict[str, Path]) -> None:
    clock = Clock()
    source = RaplSource(tree["root"], clock=clock)
    clock.now_s = 7.0
    source.poll()
    clock.now_s = 9.0
    source.read()
    assert source.details()["max_update_gap_s"] == 7.0


def denying_opener(path: Path) -> str:
    if path.name == "energy_uj":
        raise PermissionError(13, "Permission denied", str(path))
    return path.read_text()


def test_permission_error_at_open_says_how_to_fix(tree: dict[str, Path]) -> None:
    with pytest.raises(EnergyError) as info:
        RaplSource(tree["root"], open_text=denying_opener)
    message = str(info.value)
    assert f"cannot read {tree['pkg0'] / 'energy_uj'}" in message
    assert "sudo chmod a+r" in message and "CVE-2020-8694" in message
    assert "energy.meter=model" in message


def test_permission_error_on_later_read(tree: dict[str, Path]) -> None:
    deny = {"on": False}

    def opener(path: Path) -> str:
        return denying_opener(path) if deny["on"] else path.read_text()

    source = RaplSource(tree["root"], open_text=opener)
    deny["on"] = True
    with pytest.raises(EnergyError, match="chmod"):
        source.read()
    ok, reason = rapl_available(tree["root"], open_text=denying_opener)
    assert not ok and "chmod" in reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of mode")
def test_permission_error_from_real_file_mode(tree: dict[str, Path]) -> None:
    counter = tree["pkg1"] / "energy_uj"
    counter.chmod(0)
    try:
        with pytest.raises(EnergyError, match="chmod") as info:
            RaplSource(tree["root"])
        assert str(counter) in str(info.value)
    finally:
        counter.chmod(0o644)


def test_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "nope"
    ok, reason = rapl_available(root)
    assert not ok
    assert f"no powercap directory at {root}" in reason
    with pytest.raises(EnergyError, match="no powercap directory"):
        RaplSource(root)


def test_root_without_rapl_zones(tmp_path: Path) -> None:
    make_zone(tmp_path / "intel-rapl-mmio:0", "package-0", 0)
    make_zone(tmp_path / "intel-rapl:0", "psys", 0)
    ok, reason = rapl_available(tmp_path)
    assert not ok
    assert "no RAPL package zones" in reason and str(tmp_path) in reason


def test_available_on_good_tree(tree: dict[str, Path]) -> None:
    ok, reason = rapl_available(tree["root"])
    assert ok
    assert reason.startswith("2 package zone(s), 1 dram zone(s)")


def test_garbage_counter_is_an_energy_error(tree: dict[str, Path]) -> None:
    source = RaplSource(tree["root"])
    (tree["dram0"] / "energy_uj").write_text("n/a\n")
    with pytest.raises(EnergyError, match="expected an integer"):
        source.read()


def test_a_second_local_rank_meters_nothing_itself_when_rank_0_reads_rapl(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """RAPL counts the whole node, so local rank 1 leaves it to rank 0: its meter still times
    its windows (and joins the ranks' gather) instead of failing at start."""
    from greentune.config import EnergyConfig
    from greentune.energy import build_meter

    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr("greentune.energy.nvml.nvml_available", lambda: (False, "no GPU"))
    cfg = EnergyConfig(meter="auto", rapl_root=str(tree["root"]), carbon="fixed:100")
    meter, notes = build_meter(cfg, "run")
    assert meter.sources == [] and any("local rank 0 reads it" in n for n in notes)
    with meter.window("train") as w:
        pass
    assert w.result.energy_j == {} and w.result.kind == "" and w.result.emissions_g == 0.0
    meter.close()
