"""One process x 2 threads vs 2 processes x 1 thread (torchrun, DDP on gloo) at the same global
batch, on Victoria 2014 with the default network: samples/s and energy of the training epoch,
and the largest per-step loss difference between the two.

    .venv/bin/python benchmarks/distributed.py [--repeats 3] [--epochs 1]

Writes benchmarks/results/distributed.json.

    .venv/bin/python benchmarks/distributed.py --mode fsdp [--repeats 3]

FSDP vs DDP at 2 processes, for LoRA and for full fine-tuning (SETUPS below): samples/s and each
rank's peak resident memory (the kernel's high-water mark, VmHWM, read every 0.1 s while the run
lasts).
Writes benchmarks/results/distributed_fsdp.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil
from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def one_run(out: str, name: str, nproc: int, epochs: int) -> dict:
    cmd = [
        sys.executable, "-m", "greentune", "run", f"output_dir={out}", f"name={name}",
        "eval.baselines=[]", f"train.epochs={epochs}", "train.patience=null",
        "--nproc", str(nproc),
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    run = Path(out) / name
    metrics = json.loads((run / "metrics.json").read_text())
    rows = json.loads((run / "energy.json").read_text())["rows"]
    epoch_j = sum(sum(r["energy_j"].values()) for r in rows if r["window"] == "train/epoch-0")
    epoch_s = max(r["duration_s"] for r in rows if r["window"] == "train/epoch-0")
    return {
        "nproc": nproc,
        "wall_s": wall,
        "samples_per_s": metrics["training"]["samples_per_s"],
        "epoch_s": epoch_s,
        "epoch_j": epoch_j,
        "loss_curve": metrics["training"]["loss_curve"],
    }


def peak_rss_by_rank(proc: subprocess.Popen) -> dict[str, float]:
    """Wait for ``proc``; each torchrun worker's peak resident memory in MiB, by RANK."""
    peaks: dict[str, float] = {}
    parent = psutil.Process(proc.pid)
    while proc.poll() is None:
        for child in parent.children(recursive=True):
            try:
                rank = child.environ().get("RANK")
                status = Path(f"/proc/{child.pid}/status").read_text()
            except (psutil.Error, OSError):
                continue
            if rank is None or "greentune" not in " ".join(child.cmdline()):
                continue
            hwm = next(line for line in status.splitlines() if line.startswith("VmHWM"))
            peaks[rank] = max(peaks.get(rank, 0.0), int(hwm.split()[1]) / 1024)
        time.sleep(0.1)
    return peaks


# LoRA on the default patch encoder; full fine-tuning on the text encoder, because the patch
# encoder leaves the word embeddings unused, which DDP refuses when they are trainable.
SETUPS = {
    "lora": ["peft.method=lora", "train.max_steps=40"],
    "full": ["peft.method=full", "model.encoder=text", "train.max_steps=8"],
}


def fsdp_run(out: str, name: str, strategy: str, method: str) -> dict:
    cmd = [
        sys.executable, "-m", "greentune", "run", f"output_dir={out}", f"name={name}",
        "eval.baselines=[]", "train.patience=null", f"train.distributed_strategy={strategy}",
        *SETUPS[method], "--nproc", "2",
    ]  # fmt: skip
    log_path = Path(out) / f"{name}.console.txt"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        peaks = peak_rss_by_rank(proc)
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n{tail}")
    metrics = json.loads((Path(out) / name / "metrics.json").read_text())
    return {
        "strategy": strategy,
        "method": method,
        "samples_per_s": metrics["training"]["samples_per_s"],
        "peak_rss_mib_by_rank": peaks,
        "peak_rss_mib_max_rank": max(peaks.values()),
        "loss_curve": metrics["training"]["loss_curve"],
    }


def summarise(runs: list[dict]) -> dict:
    """Medians per method and strategy; peak memory of the larger rank and of rank 1 (rank 0
    also holds the data and fits the ridge skip path, the same under both strategies)."""
    summary = {}
    for method in ("lora", "full"):
        mine = [r for r in runs if r["method"] == method]
        med = {
            s: {
                "samples_per_s": statistics.median(
                    r["samples_per_s"] for r in mine if r["strategy"] == s
                ),
                "peak_rss_mib_max_rank": statistics.median(
                    r["peak_rss_mib_max_rank"] for r in mine if r["strategy"] == s
                ),
                "peak_rss_mib_rank_1": statistics.median(
                    r["peak_rss_mib_by_rank"]["1"] for r in mine if r["strategy"] == s
                ),
            }
            for s in ("ddp", "fsdp")
        }
        curves = {s: next(r["loss_curve"] for r in mine if r["strategy"] == s) for s in med}
        summary[method] = {
            "medians": med,
            **{
                f"{k.removesuffix('_mib').replace('peak_rss_mib', 'peak_rss')}_ratio_fsdp_ddp": (
                    med["fsdp"][k] / med["ddp"][k]
                )
                for k in med["ddp"]
            },
            "max_step_loss_difference": max(
                abs(a - b) for a, b in zip(curves["ddp"], curves["fsdp"], strict=True)
            ),
        }
    return summary


def main_fsdp(repeats: int) -> None:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            for method in ("lora", "full"):
                order = ("ddp", "fsdp") if i % 2 == 0 else ("fsdp", "ddp")
                for strategy in order:
                    r = fsdp_run(tmp, f"r{i}-{method}-{strategy}", strategy, method)
                    runs.append(r)
                    print(
                        f"repeat {i}, {method}, {strategy}: {r['samples_per_s']:.0f} samples/s, "
                        f"peak RSS by rank {r['peak_rss_mib_by_rank']} MiB",
                        flush=True,
                    )
    summary = summarise(runs)
    result = {
        "what": "Victoria 2014, MiniLM, 2 processes x 1 thread, global batch 32, baselines off: "
        "FSDP vs DDP; LoRA (patch encoder, 40 steps) and full fine-tuning (text encoder, 8 steps)",
        "setups": SETUPS,
        "repeats": repeats,
        "summary": summary,
        "runs": runs,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "distributed_fsdp.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--mode", choices=("processes", "fsdp"), default="processes")
    args = parser.parse_args()
    if args.mode == "fsdp":
        main_fsdp(args.repeats)
        return
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for nproc in (1, 2) if i % 2 == 0 else (2, 1):
                runs.append(one_run(tmp, f"r{i}-{nproc}", nproc, args.epochs))
                r = runs[-1]
                print(
                    f"repeat {i}, {nproc} process(es): {r['samples_per_s']:.0f} samples/s, "
                    f"epoch {r['epoch_s']:.1f} s, {r['epoch_j']:.0f} J",
                    flush=True,
                )
    med = {
        n: {
            k: statistics.median(r[k] for r in runs if r["nproc"] == n)
            for k in ("samples_per_s", "epoch_s", "epoch_j", "wall_s")
        }
        for n in (1, 2)
    }
    one = next(r["loss_curve"] for r in runs if r["nproc"] == 1)
    two = next(r["loss_curve"] for r in runs if r["nproc"] == 2)
    result = {
        "what": "Victoria 2014, MiniLM + LoRA (defaults), global batch 32, 1 epoch, baselines off",
        "repeats": args.repeats,
        "medians": med,
        "throughput_ratio_2proc_1proc": med[2]["samples_per_s"] / med[1]["samples_per_s"],
        "energy_ratio_2proc_1proc": med[2]["epoch_j"] / med[1]["epoch_j"],
        "max_step_loss_difference": max(abs(a - b) for a, b in zip(one, two, strict=True)),
        "runs": [{k: v for k, v in r.items() if k != "loss_curve"} for r in runs],
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "distributed.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
