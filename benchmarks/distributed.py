"""One process x 2 threads vs 2 processes x 1 thread (torchrun, DDP on gloo) at the same global
batch, on Victoria 2014 with the default network: samples/s and energy of the training epoch,
and the largest per-step loss difference between the two.

    .venv/bin/python benchmarks/distributed.py [--repeats 3] [--epochs 1]

Writes benchmarks/results/distributed.json.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
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
