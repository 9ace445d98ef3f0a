"""Training throughput: greentune's loop vs the HF Trainer + PEFT, same model, data, batch,
LoRA rank and threads; plus what dropout costs. Medians over interleaved repeats.

    .venv/bin/python benchmarks/throughput.py [--repeats 3] [--steps 40]

Writes benchmarks/results/throughput.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hf_anchor import LossWrapper, WindowDataset
from machine import machine_info

from greentune.cli import quiet_libraries
from greentune.config import TrainConfig, build_config
from greentune.data.text import synthetic_incidents
from greentune.data.windows import prepare_forecast_data
from greentune.models.backbone import load_tokenizer
from greentune.models.classifier import TextClassifier, load_classifier
from greentune.tasks.classify.batches import tokenize
from greentune.tasks.forecast.batches import make_batches
from greentune.tasks.forecast.model import build_model
from greentune.train.loop import train
from greentune.tuning.methods import MethodContext, apply_method

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 32


def forecast_setup(dropout: float):
    cfg = build_config(overrides=[f"model.dropout={dropout}"])
    data = prepare_forecast_data(cfg.data)
    model, _ = build_model(cfg, data, total_steps=1000)
    return cfg, model, make_batches(cfg, data, data.train.origins, None)


def greentune_loop(model, batches, steps: int) -> float:
    cfg = TrainConfig(epochs=1, batch_size=BATCH, max_steps=steps, patience=None, lr=1e-3)
    res = train(model, batches, cfg, seed=0)
    return res.samples_per_s


def trainer_run(model, dataset, steps: int, collator=None) -> float:
    from transformers import Trainer, TrainingArguments

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=BATCH,
            max_steps=steps,
            learning_rate=1e-3,
            logging_steps=10_000,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            dataloader_num_workers=0,
            remove_unused_columns=False,
            disable_tqdm=True,
            seed=0,
            lr_scheduler_type="cosine",
            warmup_steps=max(1, steps // 20),
            weight_decay=0.01,
            max_grad_norm=1.0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
        t0 = time.perf_counter()
        trainer.train()
        return steps * BATCH / (time.perf_counter() - t0)


def classify_setup(dropout: float, texts, labels, names):
    cfg = build_config(overrides=["task=classify", f"model.dropout={dropout}"])
    tok = load_tokenizer(cfg.model)
    inner = load_classifier(cfg.model, names, int(tok.pad_token_id))
    ctx = MethodContext(total_steps=1000, task_type="SEQ_CLS", head_modules=("classifier",))
    model = apply_method(inner, cfg.peft, ctx)
    return cfg, tok, model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    quiet_libraries()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    frame = synthetic_incidents(args.steps * BATCH + BATCH, seed=0)
    names = sorted(frame.label.unique())
    labels = frame.label.map({n: i for i, n in enumerate(names)}).to_numpy()
    texts = frame.text.tolist()
    runs: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        runs.setdefault(name, []).append(value)
        print(f"  {name}: {value:.1f} samples/s", flush=True)

    for rep in range(args.repeats):
        print(f"repeat {rep + 1}/{args.repeats}", flush=True)
        # forecasting, MiniLM patch encoder + LoRA r=8 (the default run's network)
        _, model, batches = forecast_setup(0.0)
        record("forecast/greentune loop (dropout 0)", greentune_loop(model, batches, args.steps))
        _, model, batches = forecast_setup(0.0)
        record(
            "forecast/HF Trainer (dropout 0)",
            trainer_run(LossWrapper(model), WindowDataset(batches), args.steps),
        )
        _, model, batches = forecast_setup(0.1)
        record("forecast/greentune loop (dropout 0.1)", greentune_loop(model, batches, args.steps))
        # classification, MiniLM seq-cls + LoRA r=8 on query/value
        _, tok, model = classify_setup(0.0, texts, labels, names)
        tb = tokenize(tok, texts, labels.astype(np.int64), 64)
        record(
            "classify/greentune loop (dynamic padding, dropout 0)",
            greentune_loop(TextClassifier(model), tb, args.steps),
        )
        _, tok, model = classify_setup(0.1, texts, labels, names)
        record(
            "classify/greentune loop (dynamic padding, dropout 0.1)",
            greentune_loop(TextClassifier(model), tb, args.steps),
        )
        from transformers import DataCollatorWithPadding

        _, tok, model = classify_setup(0.0, texts, labels, names)
        ds = [
            {"input_ids": t, "attention_mask": np.ones_like(t), "labels": int(y)}
            for t, y in zip(tb.tokens, labels, strict=True)
        ]
        record(
            "classify/HF Trainer + PEFT (dynamic padding, dropout 0)",
            trainer_run(model, ds, args.steps, DataCollatorWithPadding(tok)),
        )
        _, tok, model = classify_setup(0.1, texts, labels, names)
        enc = tok(texts, padding="max_length", truncation=True, max_length=64)
        ds64 = [
            {"input_ids": i, "attention_mask": m, "labels": int(y)}
            for i, m, y in zip(enc["input_ids"], enc["attention_mask"], labels, strict=True)
        ]
        record(
            "classify/HF Trainer + PEFT (tutorial: pad 64, dropout 0.1)",
            trainer_run(model, ds64, args.steps),
        )

    medians = {k: statistics.median(v) for k, v in runs.items()}
    ratios = {
        "forecast: greentune / Trainer": medians["forecast/greentune loop (dropout 0)"]
        / medians["forecast/HF Trainer (dropout 0)"],
        "forecast: dropout 0 / dropout 0.1": medians["forecast/greentune loop (dropout 0)"]
        / medians["forecast/greentune loop (dropout 0.1)"],
        "classify: dropout 0 / dropout 0.1": medians[
            "classify/greentune loop (dynamic padding, dropout 0)"
        ]
        / medians["classify/greentune loop (dynamic padding, dropout 0.1)"],
        "classify: greentune / Trainer (same settings)": medians[
            "classify/greentune loop (dynamic padding, dropout 0)"
        ]
        / medians["classify/HF Trainer + PEFT (dynamic padding, dropout 0)"],
        "classify: greentune / Trainer tutorial defaults": medians[
            "classify/greentune loop (dynamic padding, dropout 0)"
        ]
        / medians["classify/HF Trainer + PEFT (tutorial: pad 64, dropout 0.1)"],
    }
    out = {
        "machine": machine_info(),
        "steps": args.steps,
        "batch": BATCH,
        "repeats": args.repeats,
        "samples_per_s": runs,
        "median_samples_per_s": medians,
        "ratios": ratios,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps(out, indent=2))
    print("\nmedian samples/s")
    for k, v in medians.items():
        print(f"  {k:60s} {v:8.1f}")
    for k, v in ratios.items():
        print(f"  {k:60s} {v:8.2f}x")


if __name__ == "__main__":
    main()
