"""What ``train.ema_decay`` costs per training step: samples/s of greentune's loop with and
without the weight average, on real SST-2 phrases (a seeded sample; ../shared/data read by
path), full fine-tuning and LoRA r=8 of the packaged MiniLM, batch 32, the same seed, batches
and threads. Arms alternate within each repeat (the order flips every repeat); medians.

    .venv/bin/python benchmarks/averaging.py [--repeats 5] [--steps 60] [--methods full,lora]

What the average does to quality is measured by ``benchmarks/methods.py --set
train.ema_decay=0.999`` (benchmarks/README.md). Writes benchmarks/results/averaging.json|md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info, write_results

from greentune.cli import quiet_libraries
from greentune.config import TrainConfig, build_config
from greentune.models.backbone import load_tokenizer
from greentune.models.classifier import TextClassifier, load_classifier
from greentune.tasks.classify.batches import tokenize
from greentune.train.averaging import WeightAverage
from greentune.train.loop import train
from greentune.tuning.methods import MethodContext, apply_method

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "text" / "sst2" / "train.csv"
BATCH = 32
DECAY = 0.999
LR = {"full": 1e-4, "lora": 3e-3}  # the SST-2 method table's rates (benchmarks/README.md)


def classifier(method: str) -> tuple[torch.nn.Module, object]:
    cfg = build_config(overrides=["task=classify", f"peft.method={method}"])
    tok = load_tokenizer(cfg.model)
    inner = load_classifier(cfg.model, ["negative", "positive"], int(tok.pad_token_id))
    ctx = MethodContext(total_steps=1000, task_type="SEQ_CLS", head_modules=("classifier",))
    return TextClassifier(apply_method(inner, cfg.peft, ctx)), tok


def samples_per_s(
    method: str, texts: list[str], labels: np.ndarray, steps: int, ema: bool
) -> float:
    torch.manual_seed(0)
    model, tok = classifier(method)
    batches = tokenize(tok, texts, labels, 66)
    cfg = TrainConfig(
        epochs=1, batch_size=BATCH, max_steps=steps, patience=None, lr=LR[method], budget_s=None
    )
    callbacks = [WeightAverage(DECAY)] if ema else []
    return float(train(model, batches, cfg, seed=0, callbacks=callbacks).samples_per_s)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--methods", default="full,lora")
    args = parser.parse_args()
    if not SST2.is_file():
        raise SystemExit(f"{SST2} not found: this benchmark reads SST-2 from ../shared/data")
    quiet_libraries()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    frame = pd.read_csv(SST2).sample(n=args.steps * BATCH, random_state=0)
    texts, labels = frame["text"].tolist(), frame["label"].to_numpy(dtype=np.int64)
    methods = args.methods.split(",")
    runs: dict[str, dict[str, list[float]]] = {m: {"off": [], "ema": []} for m in methods}
    for rep in range(args.repeats):
        for method in methods:
            order = ("off", "ema") if rep % 2 == 0 else ("ema", "off")
            for arm in order:
                value = samples_per_s(method, texts, labels, args.steps, arm == "ema")
                runs[method][arm].append(value)
                print(f"repeat {rep + 1} {method} {arm}: {value:.1f} samples/s", flush=True)
    rows = []
    for method in methods:
        off = statistics.median(runs[method]["off"])
        ema = statistics.median(runs[method]["ema"])
        rows.append({"method": method, "off": off, "ema": ema, "step_time_ratio": off / ema})
    out = {
        "machine": machine_info(),
        "setup": {
            "data": f"SST-2 training phrases, a seeded sample of {args.steps * BATCH}",
            "batch": BATCH,
            "steps": args.steps,
            "repeats": args.repeats,
            "decay": DECAY,
            "lr": LR,
        },
        "samples_per_s": runs,
        "rows": rows,
    }
    lines = [
        "# What train.ema_decay costs per step",
        "",
        f"Machine: {out['machine']['cpu']}, {out['machine']['cores']} cores. {args.steps} steps "
        f"of batch {BATCH} on SST-2 phrases, decay {DECAY}, arms alternating, medians of "
        f"{args.repeats} repeats.",
        "",
        "| method | samples/s without | samples/s with the average | step time, with / without |",
        "|---|---|---|---|",
        *[
            f"| {r['method']} | {r['off']:.1f} | {r['ema']:.1f} | {r['step_time_ratio']:.3f}x |"
            for r in rows
        ],
    ]
    write_results(ROOT / "benchmarks" / "results" / "averaging", out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
