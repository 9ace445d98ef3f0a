"""Compression of the default run (MiniLM + patch encoder + LoRA on Victoria 2014): every
method measured side by side with the fp32 original in one process, interleaved rounds.

    .venv/bin/python benchmarks/compress.py [--run RUN] [--rounds 7] [--task forecast|classify]

Without --run it trains the default run first (`greentune run`'s embedded default). Then it
compresses it with int8-dynamic, onnx, onnx-int8, prune, prune-layers and distill, and the
distilled student once more with onnx-int8 (variants chain). Targets (issue 5): int8 >= 1.7x
faster at batch 1 with <= 1 % relative metric change; onnx-int8 >= 2.5x faster; the smallest
variant <= 25 % of the fp32 size; a half-depth distilled student within 3 % of its teacher.
Anchors (published, BERT-base on MRPC): PyTorch's dynamic-quantization tutorial 438 -> 181 MB,
F1 within 0.6 %, ~1.8x faster; Intel's Optimum int8 BERT 0.5 % F1 drop at 174 MB (ONNX 107 MB).

Writes benchmarks/results/compress[-classify].json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info

import greentune as gt
from greentune.cli import quiet_libraries
from greentune.compress import CompressOptions, compress_run
from greentune.compress.measure import BenchPlan
from greentune.config import load_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
METHODS = ["int8-dynamic", "onnx", "onnx-int8", "prune", "prune-layers", "distill"]
ANCHORS = {
    "pytorch_dynamic_quantization_tutorial": {
        "model": "bert-base-uncased fine-tuned on MRPC",
        "fp32_mb": 438,
        "int8_mb": 181,
        "f1_change": "within 0.6 %",
        "speedup": 1.8,
    },
    "intel_optimum_int8_bert": {
        "model": "bert-base MRPC",
        "f1_drop": "0.5 %",
        "int8_mb": 174,
        "onnx_int8_mb": 107,
    },
}
TASKS = {
    "forecast": ["eval.baselines=[seasonal_naive_weekly,lightgbm]"],
    "classify": [f"--config={ROOT / 'configs' / 'classify' / 'example.yaml'}"],
}


def train_parent(task: str) -> Path:
    out = RESULTS / "runs"
    name = f"compress-{task}"
    shutil.rmtree(out / name, ignore_errors=True)
    for old in out.glob(f"{name}-*"):
        shutil.rmtree(old)
    overrides = [o for o in TASKS[task] if not o.startswith("--config=")]
    config = next((o.split("=", 1)[1] for o in TASKS[task] if o.startswith("--config=")), None)
    cfg = load_config(config, [*overrides, f"output_dir={out}", f"name={name}"])
    run_dir = gt.run(cfg, echo=lambda m: print(f"  [{name}] {m}", flush=True))
    return run_dir.path


def targets(report: dict[str, Any], chain: dict[str, Any] | None) -> dict[str, Any]:
    by = {v["method"]: v for v in report["variants"] if v["status"] != "failed"}
    sizes = {v["name"]: v["size_bytes"] for v in by.values()}
    if chain:
        sizes.update({v["name"]: v["size_bytes"] for v in chain["variants"]})
    smallest = min(sizes, key=sizes.__getitem__)
    ref_size = report["reference"]["size_bytes"]
    out: dict[str, Any] = {"smallest": smallest, "smallest_ratio": sizes[smallest] / ref_size}
    out["smallest_ok"] = out["smallest_ratio"] <= 0.25
    if "int8-dynamic" in by:
        v = by["int8-dynamic"]
        out["int8_speedup_b1"] = v["speedup_b1"]
        out["int8_metric_change"] = v["metric_drop"]
        out["int8_ok"] = v["speedup_b1"] >= 1.7 and abs(v["metric_drop"]) <= 0.01
    if "onnx-int8" in by:
        out["onnx_int8_speedup_b1"] = by["onnx-int8"]["speedup_b1"]
        out["onnx_int8_ok"] = by["onnx-int8"]["speedup_b1"] >= 2.5
    if "distill" in by:
        out["distill_metric_change"] = by["distill"]["metric_drop"]
        out["distill_ok"] = by["distill"]["metric_drop"] <= 0.03
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, help="compress this run instead of training one")
    parser.add_argument("--task", choices=sorted(TASKS), default="forecast")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-chain", action="store_true")
    args = parser.parse_args()
    quiet_libraries()
    t0 = time.perf_counter()
    parent = args.run or train_parent(args.task)
    train_s = time.perf_counter() - t0
    opts = CompressOptions(
        methods=tuple(args.methods.split(",")),
        plan=BenchPlan(rounds=args.rounds),
        replace=True,
    )
    log = lambda m: print(f"  [compress] {m}", flush=True)  # noqa: E731
    report = compress_run(parent, opts, log)
    chain = None
    distilled = next(
        (v for v in report["variants"] if v["method"] == "distill" and v["status"] != "failed"),
        None,
    )
    if distilled and not args.no_chain:
        chain = compress_run(
            distilled["run"],
            CompressOptions(("onnx-int8",), plan=BenchPlan(rounds=args.rounds), replace=True),
            log,
        )
        # the chained variant's size against the original fp32, not against the student
        for v in chain["variants"]:
            v["size_ratio_vs_original"] = v["size_bytes"] / report["reference"]["size_bytes"]
    result = {
        "machine": machine_info(),
        "parent": str(parent),
        "parent_train_s": train_s,
        "report": report,
        "chain": chain,
        "targets": targets(report, chain),
        "anchors": ANCHORS,
    }
    suffix = "" if args.task == "forecast" else f"-{args.task}"
    path = RESULTS / f"compress{suffix}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["targets"], indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
