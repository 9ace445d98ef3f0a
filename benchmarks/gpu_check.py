"""One short check for a machine with NVIDIA GPUs: the CUDA paths CI cannot run.

    OUT=/some/dir .venv/bin/python benchmarks/gpu_check.py [--backbone tiny-bert]

1. ``greentune run`` in one process on CUDA, fp32 then bf16 autocast: training samples/s of
   each (the bf16 / fp32 ratio), and every GPU row of energy.json read from NVML.
2. The same under ``torchrun --nproc-per-node 1`` (the launcher on a GPU machine), and an NCCL
   all-reduce probe (greentune itself makes no process group for one process).
3. With 2 or more GPUs: ``greentune run --nproc 2`` with DDP and with FSDP on NCCL; both must
   take the same steps (equal loss curves), and each rank bills its own GPU.
4. The measured path against the model and CodeCarbon: one workload (``--agreement-s`` of
   4096 x 4096 matmuls on the GPU) inside three meters at once, greentune's ``auto`` (NVML for
   the GPU, RAPL for the CPU where readable), greentune's CPU-time ``model`` and CodeCarbon's
   OfflineEmissionsTracker (process mode, 1 s samples); every component's joules and the
   ratios between them are recorded (the error of each against the measured counters).

On a machine without CUDA whose RAPL counters are readable (Linux powercap; ``--rapl-root``),
only step 4 runs, on a CPU workload: RAPL's package and DRAM joules against greentune's model and
CodeCarbon's. RAPL counts the whole machine and the model one process's CPU time, so run it on an
otherwise idle machine; the ratios are the model's error there, recorded, not judged.

Writes $OUT/gpu_check.json (or --out) and exits 0 when every check passed, 1 when one failed,
3 when neither a CUDA device nor RAPL is there (nothing run). About 2-4 minutes with the tiny
backbone. ``--allow-cpu`` runs steps 1-2 on a CPU machine to try the script itself (its NVML
checks fail).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


NCCL_PROBE = """import torch, torch.distributed as dist
dist.init_process_group("nccl")
torch.cuda.set_device(0)
t = torch.ones(1, device="cuda")
dist.all_reduce(t)
dist.destroy_process_group()
print("nccl ok", t.item())
"""


def _series_args(csv: Path, out: Path, name: str, backbone: str) -> list[str]:
    from tests.conftest import series_overrides

    args = series_overrides(csv, out, name)
    return [a for a in args if not a.startswith("model.backbone=")] + [
        f"model.backbone={backbone}",
        "train.epochs=2",
        "train.patience=null",
        "eval.baselines=[seasonal_naive_daily]",
        "energy.meter=auto",
    ]


def _run(cmd: list[str], run: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    wall_s = time.perf_counter() - t0
    result: dict[str, Any] = {"command": " ".join(cmd[2:]), "exit_code": done.returncode}
    result["wall_s"] = round(wall_s, 1)
    if done.returncode != 0:
        result["output_tail"] = (done.stdout + done.stderr)[-3000:]
        return result
    metrics = json.loads((run / "metrics.json").read_text())
    rows = json.loads((run / "energy.json").read_text())["rows"]
    gpu_rows = [r for r in rows if "gpu" in r["energy_j"]]
    result.update(
        samples_per_s=metrics["training"]["samples_per_s"],
        loss_curve=metrics["training"]["loss_curve"],
        gpu_rows=len(gpu_rows),
        gpu_sources=sorted({r["sources"]["gpu"] for r in gpu_rows}),
        gpu_ranks=sorted({r["rank"] for r in gpu_rows}),
        gpu_energy_j=sum(r["energy_j"]["gpu"] for r in gpu_rows),
    )
    return result


def _nvml_ok(r: dict[str, Any], ranks: list[int]) -> bool:
    return (
        r["exit_code"] == 0
        and r["gpu_sources"] == ["nvml"]
        and r["gpu_ranks"] == ranks
        and r["gpu_energy_j"] > 0
    )


def agreement(workload_s: float, rapl_root: str, size: int = 4096) -> dict[str, Any]:
    """Joules of one workload as greentune measures it, as its model estimates it and as
    CodeCarbon reports it, all three around the same seconds."""
    import torch
    from codecarbon import OfflineEmissionsTracker

    from greentune.config import EnergyConfig
    from greentune.energy import build_meter

    auto = EnergyConfig(meter="auto", carbon="fixed:400", rapl_root=rapl_root)
    measured, notes = build_meter(auto, "gpu-check")
    modelled, _ = build_meter(EnergyConfig(meter="model", carbon="fixed:400"), "gpu-check")
    tracker = OfflineEmissionsTracker(
        country_iso_code="USA",
        tracking_mode="process",
        measure_power_secs=1,
        save_to_file=False,
        log_level="error",
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(size, size, device=device)
    tracker.start()
    with measured.window("workload") as m, modelled.window("workload") as mo:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < workload_s:
            x = torch.tanh(x @ x)
            if device == "cuda":
                torch.cuda.synchronize()
    tracker.stop()
    measured.close()
    modelled.close()
    cc = tracker.final_emissions_data
    ours, model = m.result, mo.result
    assert ours is not None and model is not None
    kwh_j = 3.6e6
    out: dict[str, Any] = {
        "workload_s": workload_s,
        "matrix_size": size,
        "device": device,
        "meter_notes": notes,
        "measured": {"kind": ours.kind, "sources": ours.sources, "energy_j": ours.energy_j},
        "model": {"energy_j": model.energy_j},
        "codecarbon": {
            "cpu_j": cc.cpu_energy * kwh_j,
            "gpu_j": cc.gpu_energy * kwh_j,
            "ram_j": cc.ram_energy * kwh_j,
            "cpu_model": cc.cpu_model,
            "gpu_model": cc.gpu_model,
        },
    }
    gpu_j = sum(j for c, j in ours.energy_j.items() if c.startswith("gpu"))
    ratios: dict[str, float] = {}
    if gpu_j and cc.gpu_energy:
        ratios["gpu_measured_over_codecarbon"] = gpu_j / out["codecarbon"]["gpu_j"]
    if ours.sources.get("cpu") == "rapl":  # the CPU is measured: the model's error against it
        ratios["cpu_model_over_measured"] = model.energy_j["cpu"] / ours.energy_j["cpu"]
        ratios["cpu_codecarbon_over_measured"] = out["codecarbon"]["cpu_j"] / ours.energy_j["cpu"]
    ratios["cpu_codecarbon_over_model"] = out["codecarbon"]["cpu_j"] / model.energy_j["cpu"]
    out["ratios"] = ratios
    return out


def rapl_only(report: dict[str, Any], measured_agreement: dict[str, Any], out: Path) -> int:
    """Step 4 alone, on the CPU: a machine with RAPL counters and no CUDA device."""
    from machine import machine_info

    # the machine's kind as the agreement's meter found it (its --rapl-root, not the default)
    machine = {**machine_info(), "energy_kind": measured_agreement["measured"]["kind"]}
    report.update(machine=machine, agreement=measured_agreement)
    measured = report["agreement"]["measured"]
    checks = {
        "RAPL measured the CPU": measured["sources"].get("cpu") == "rapl"
        and measured["energy_j"].get("cpu", 0) > 0
    }
    return finish(report, checks, out)


def finish(report: dict[str, Any], checks: dict[str, bool], out: Path) -> int:
    """Write gpu_check.json, print each check and ratio; 0 when every check passed."""
    report["checks"] = checks
    report["date"] = time.strftime("%Y-%m-%d")
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    if "bf16_over_fp32_samples_per_s" in report:
        print(
            f"bf16 autocast / fp32 training samples/s: {report['bf16_over_fp32_samples_per_s']:.2f}"
        )
    for name, value in report["agreement"]["ratios"].items():
        print(f"energy {name}: {value:.3f}")
    print(f"wrote {out / 'gpu_check.json'}")
    return 0 if checks and all(checks.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    parser.add_argument("--backbone", default="tiny-bert")
    parser.add_argument("--agreement-s", type=float, default=30.0)
    parser.add_argument(
        "--allow-cpu", action="store_true", help="run anyway (to try the script; NVML checks fail)"
    )
    parser.add_argument("--rapl-root", default="/sys/class/powercap", help="powercap sysfs root")
    parser.add_argument("--size", type=int, default=4096, help="the workload's square matrices")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    from greentune.energy.rapl import rapl_available

    rapl_ok, rapl_why = rapl_available(Path(args.rapl_root))
    report: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "rapl": rapl_why,
    }
    if not torch.cuda.is_available() and not args.allow_cpu:
        if rapl_ok:
            return rapl_only(report, agreement(args.agreement_s, args.rapl_root, args.size), out)
        print("gpu_check: no CUDA device is visible (torch.cuda.is_available() is False) and")
        print(f"RAPL cannot be read ({rapl_why}); run it on a machine with an NVIDIA GPU and a")
        print("CUDA build of torch, or with readable RAPL counters. Nothing was run.")
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
        return 3
    from machine import machine_info

    from tests.conftest import make_series

    gpus = torch.cuda.device_count()
    report.update(gpus=gpus, machine=machine_info())
    if gpus:
        report.update(gpu_name=torch.cuda.get_device_name(0))
        report["bf16_supported"] = torch.cuda.is_bf16_supported()
    cli = [sys.executable, "-m", "greentune", "run"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    checks: dict[str, bool] = {}
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "load.csv"
        make_series().to_csv(csv, index=False)
        runs = Path(tmp) / "runs"

        def base(name: str) -> list[str]:
            return _series_args(csv, runs, name, args.backbone)

        for precision in ("fp32", "bf16"):
            r = _run([*cli, *base(precision), f"train.precision={precision}"], runs / precision)
            report[f"one_process_{precision}"] = r
            checks[f"one process {precision}: NVML rows"] = _nvml_ok(r, [0])
        fp32, bf16 = report["one_process_fp32"], report["one_process_bf16"]
        if fp32["exit_code"] == 0 and bf16["exit_code"] == 0:
            report["bf16_over_fp32_samples_per_s"] = bf16["samples_per_s"] / fp32["samples_per_s"]
        cmd = [*torchrun, "--nproc-per-node=1", "-m", "greentune", "run", *base("torchrun1")]
        report["torchrun_1"] = _run(cmd, runs / "torchrun1")
        checks["torchrun 1 process: NVML rows"] = _nvml_ok(report["torchrun_1"], [0])
        if gpus >= 1:  # greentune makes no process group for 1 process: probe NCCL directly
            probe = Path(tmp) / "nccl_probe.py"
            probe.write_text(NCCL_PROBE)
            done = subprocess.run(
                [*torchrun, "--nproc-per-node=1", str(probe)], capture_output=True, text=True
            )
            report["nccl_probe_1_process"] = (done.stdout + done.stderr)[-1000:]
            checks["NCCL all-reduce, 1 process"] = "nccl ok 1.0" in done.stdout
        if gpus >= 2:
            for strategy in ("ddp", "fsdp"):
                cmd = [*cli, *base(strategy), f"train.distributed_strategy={strategy}"]
                r = _run([*cmd, "--nproc", "2"], runs / strategy)
                report[f"nccl_{strategy}"] = r
                checks[f"NCCL {strategy}, 2 processes: NVML rows per rank"] = _nvml_ok(r, [0, 1])
            ddp, fsdp = report["nccl_ddp"], report["nccl_fsdp"]
            if ddp["exit_code"] == 0 and fsdp["exit_code"] == 0:
                gap = max(
                    abs(a - b) for a, b in zip(ddp["loss_curve"], fsdp["loss_curve"], strict=True)
                )
                report["fsdp_ddp_max_step_loss_difference"] = gap
                checks["FSDP takes DDP's steps (losses within 1e-3)"] = gap < 1e-3
        else:
            report["nccl"] = (
                f"greentune on NCCL skipped: it needs 2 GPUs (one per rank), not {gpus}"
            )
    report["agreement"] = agreement(args.agreement_s, args.rapl_root, args.size)
    ratio = report["agreement"]["ratios"].get("gpu_measured_over_codecarbon")
    if gpus:  # both read NVML's counters on the same device: they should agree closely
        checks["NVML GPU energy within 10 % of CodeCarbon's"] = (
            ratio is not None and abs(ratio - 1) < 0.1
        )
    return finish(report, checks, out)


if __name__ == "__main__":
    sys.exit(main())
