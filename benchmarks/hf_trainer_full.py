"""The anchor for the energy comparison: an HF Trainer script that fully fine-tunes the same
network (MiniLM + patch encoder + head, same initialisation) on the same Victoria windows, with
the Trainer's defaults (AdamW lr 5e-5, linear decay, the backbone's dropout 0.1), and stops as
soon as the validation loss reaches a target (the greentune run's best).

    .venv/bin/python benchmarks/hf_trainer_full.py --target 0.123 --max-epochs 6 --out r.json

Run it under ``greentune energy measure`` so that both sides are metered the same way.
"""

from __future__ import annotations

import argparse
import json
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
from greentune.tasks.forecast.skip import ridge_skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", type=float, required=True, help="validation loss to reach")
    parser.add_argument("--max-epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument(
        "--skip-init",
        choices=["ridge", "random"],
        default="ridge",
        help="ridge: greentune's ridge-initialised skip path; random: a plain HF-style head",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    quiet_libraries()
    from transformers import Trainer, TrainerCallback, TrainingArguments

    torch.set_num_threads(len(__import__("os").sched_getaffinity(0)))
    cfg = build_config(
        overrides=[
            "peft.method=full",
            f"model.dropout={args.dropout}",
            f"model.skip_init={args.skip_init}",
        ]
    )
    data = prepare_forecast_data(cfg.data)
    skip, _ = ridge_skip(cfg, data, lambda m: None)  # None with skip_init=random
    model, _ = build_model(cfg, data, total_steps=1000, skip=skip)
    train_b = make_batches(cfg, data, data.train.origins, None)
    val_b = make_batches(cfg, data, data.val.origins, None)
    history: list[dict[str, float]] = []

    class StopAtTarget(TrainerCallback):
        def on_epoch_end(self, targs, state, control, **kwargs):
            model.eval()
            with torch.no_grad():
                val = mean_loss(model, val_b, cfg.eval.batch_size)
            model.train()
            history.append({"epoch": state.epoch, "step": state.global_step, "val_loss": val})
            print(f"epoch {state.epoch:.0f}: val loss {val:.5f} (target {args.target:.5f})")
            if val <= args.target:
                control.should_training_stop = True
            return control

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=cfg.train.batch_size,
            num_train_epochs=args.max_epochs,
            learning_rate=args.lr,
            logging_steps=10_000,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            dataloader_num_workers=0,
            remove_unused_columns=False,
            disable_tqdm=True,
            seed=cfg.seed,
        )
        trainer = Trainer(
            model=LossWrapper(model),
            args=targs,
            train_dataset=WindowDataset(train_b),
            callbacks=[StopAtTarget()],
        )
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0
    best = min(h["val_loss"] for h in history)
    result = {
        "target_val_loss": args.target,
        "best_val_loss": best,
        "reached": best <= args.target,
        "epochs": len(history),
        "steps": history[-1]["step"],
        "train_s": train_s,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "history": history,
        "settings": {
            "lr": args.lr,
            "dropout": args.dropout,
            "max_epochs": args.max_epochs,
            "skip_init": args.skip_init,
        },
    }
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
