"""The anchor of the fair fight (`energy.py trainer`): the HF Trainer fine-tunes the very network
greentune trains (MiniLM + patch encoder + head with the ridge-initialised skip path, the same
PEFT wrapping for LoRA, the same dropout) on the same Victoria windows, with the HF idiom for
early stopping: evaluation and a checkpoint every epoch, ``EarlyStoppingCallback`` with the same
patience, the best checkpoint restored at the end (``load_best_model_at_end``). Everything else
is the Trainer's default (AdamW, linear decay, no warmup, no weight decay); the learning rate is
searched by the caller on the same grid as greentune's.

    .venv/bin/python benchmarks/hf_trainer.py --method lora --lr 3e-4 --seed 0 --out r.json

Run it under ``greentune energy measure`` so that both sides are metered the same way. It
writes the validation curve with the wall time of each evaluation (to apportion the metered
energy) and the restored model's test MAPE, scored by greentune's own functions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hf_anchor import LossWrapper, WindowDataset

from greentune.cli import quiet_libraries
from greentune.config import build_config
from greentune.data.windows import prepare_forecast_data
from greentune.tasks.base import mean_loss
from greentune.tasks.forecast.batches import make_batches
from greentune.tasks.forecast.model import build_model
from greentune.tasks.forecast.predict import (
    evaluate_forecast,
    predict_scaled,
    season_steps,
    to_forecast,
)
from greentune.tasks.forecast.skip import ridge_skip
from greentune.train.loop import total_optimizer_steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", choices=["lora", "full"], default="lora")
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    quiet_libraries()
    from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_utils import set_seed

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    set_seed(args.seed)
    cfg = build_config(
        overrides=[
            f"peft.method={args.method}",
            f"model.dropout={args.dropout}",
            f"seed={args.seed}",
            f"train.lr={args.lr}",
        ]
    )
    data = prepare_forecast_data(cfg.data)
    skip, _ = ridge_skip(cfg, data, lambda m: None)
    total_steps = total_optimizer_steps(len(data.train), cfg.train)
    model, _ = build_model(cfg, data, total_steps, skip)
    train_b = make_batches(cfg, data, data.train.origins, None)
    val_b = make_batches(cfg, data, data.val.origins, None)
    history: list[dict[str, float]] = []

    class Curve(TrainerCallback):
        def on_evaluate(self, targs, state, control, metrics=None, **kwargs):
            row = {"epoch": state.epoch, "step": state.global_step}
            row |= {"val_loss": metrics["eval_loss"], "time": time.time()}
            history.append(row)
            print(f"epoch {state.epoch:.0f}: val loss {row['val_loss']:.5f}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=cfg.train.batch_size,
            per_device_eval_batch_size=cfg.eval.batch_size,
            num_train_epochs=args.epochs,
            learning_rate=args.lr,
            eval_strategy="epoch",
            save_strategy="epoch",
            save_total_limit=1,
            load_best_model_at_end=True,
            metric_for_best_model="eval_loss",
            greater_is_better=False,
            logging_steps=10_000,
            report_to=[],
            use_cpu=True,
            dataloader_num_workers=0,
            remove_unused_columns=False,
            label_names=["y"],  # the targets; without them the Trainer reports no eval_loss
            prediction_loss_only=True,
            disable_tqdm=True,
            seed=args.seed,
        )
        trainer = Trainer(
            model=LossWrapper(model),
            args=targs,
            train_dataset=WindowDataset(train_b),
            eval_dataset=WindowDataset(val_b),
            callbacks=[Curve(), EarlyStoppingCallback(early_stopping_patience=args.patience)],
        )
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        restored_val = mean_loss(model, val_b, cfg.eval.batch_size)
    test = data.test.origins
    out = predict_scaled(model, make_batches(cfg, data, test, None), cfg.eval.batch_size)
    scores = evaluate_forecast(
        data, test, to_forecast(data, out, cfg.model.quantiles),
        season_steps(data, cfg.eval.season_length),
    )  # fmt: skip
    result = {
        "best_val_loss": min(h["val_loss"] for h in history),
        "restored_val_loss": restored_val,
        "test_mape": scores["mape"],
        "epochs": len(history),
        "steps": history[-1]["step"],
        "train_s": train_s,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "history": history,
        "settings": vars(args) | {"out": str(args.out)},
    }
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
