"""benchmarks/gpu_check.py on a machine without CUDA: RAPL's path alone, or nothing to run."""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests.unit.energy.test_rapl import make_zone

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the path without CUDA")


def gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_or_rapl_nothing_runs_and_the_reason_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-powercap"
    code = gpu_check().main(["--out", str(tmp_path), "--rapl-root", str(missing)])
    assert code == 3
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["cuda"] is False
    assert f"no powercap directory at {missing}" in report["rapl"]
    assert "agreement" not in report
    assert "RAPL cannot be read" in capsys.readouterr().out


def test_with_rapl_and_no_cuda_the_cpu_agreement_runs_against_the_counters(
    tmp_path: Path,
) -> None:
    root = tmp_path / "powercap"
    package = make_zone(root / "intel-rapl:0", "package-0", 0)
    dram = make_zone(package / "intel-rapl:0:0", "dram", 0)
    (root / "intel-rapl:0:0").symlink_to(dram)
    stop = threading.Event()

    def set_at_once(zone: Path, energy_uj: int) -> None:
        # sysfs reads are atomic; a truncate-then-write could be read half-done
        part = zone / "energy_uj.part"
        part.write_text(f"{energy_uj}\n")
        os.replace(part, zone / "energy_uj")

    def counters() -> None:  # a package drawing 1 J and DRAM 0.1 J every 20 ms
        uj = 0
        while not stop.wait(0.02):
            uj += 1_000_000
            set_at_once(package, uj)
            set_at_once(dram, uj // 10)

    ticker = threading.Thread(target=counters, daemon=True)
    ticker.start()
    try:
        args = ["--out", str(tmp_path), "--rapl-root", str(root)]
        code = gpu_check().main([*args, "--agreement-s", "0.3", "--size", "256"])
    finally:
        stop.set()
        ticker.join()
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert code == 0, report
    assert report["checks"] == {"RAPL measured the CPU": True}
    assert report["rapl"] == f"1 package zone(s), 1 dram zone(s) under {root}"
    measured = report["agreement"]["measured"]
    assert measured["kind"] == "measured" and report["machine"]["energy_kind"] == "measured"
    assert measured["sources"]["cpu"] == "rapl"
    # at 50 J/s for at least the 0.3 s window
    assert measured["energy_j"]["cpu"] >= 10
    assert measured["energy_j"]["dram"] == pytest.approx(measured["energy_j"]["cpu"] / 10, rel=0.2)
    ratios = report["agreement"]["ratios"]
    model_j = report["agreement"]["model"]["energy_j"]["cpu"]
    assert ratios["cpu_model_over_measured"] == pytest.approx(model_j / measured["energy_j"]["cpu"])
    assert report["agreement"]["device"] == "cpu" and report["agreement"]["matrix_size"] == 256
