"""Batches grouped by text length (``train.group_by_length``) against shuffled batches, on a
seeded sample of SST-2: samples/s, training seconds, energy, validation loss and dev accuracy,
each seed's two arms run back to back (the anchor in the same run).

    .venv/bin/python benchmarks/grouping.py [--train-rows 4000] [--epochs 2]
        [--methods full,lora] [--seeds 0,1,2] [--tag T]
    .venv/bin/python benchmarks/grouping.py --padding

--padding trains nothing: it tokenises all of SST-2's training phrases as the runs do and counts
the tokens a batch of 32 computes per phrase, shuffled and grouped (epoch 0 of seed 0), beside
the phrases' own mean (results/grouping-padding.json and .md).

The default is chosen on validation loss (the 10 % of the sample held out), never on the dev
sentences, which are the reported test. Learning rates: the middle of each method's grid in
benchmarks/methods.py, the same for both arms. Energy is modelled on a VM without counters.
Writes benchmarks/results/grouping[-T].json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import git_commit, machine_info, write_results
from methods import DATASETS, DEFAULT_GRID, GRIDS, METHODS, RESULTS, SST2, one_run, sst2_args

from greentune.cli import quiet_libraries

ARMS = {"shuffled": "train.group_by_length=false", "grouped": "train.group_by_length=true"}
FIELDS = ("samples_per_s", "train_s", "energy_wh", "energy_to_best_wh", "best_val_loss", "accuracy")


def summarise(runs: dict[str, dict[str, dict[str, dict[str, Any]]]]) -> dict[str, Any]:
    """Per method: each arm's medians and ranges, and grouped / shuffled per seed (median)."""
    out: dict[str, Any] = {}
    for method, arms in runs.items():
        row: dict[str, Any] = {}
        for arm, seeds in arms.items():
            row[arm] = {
                f: {
                    "median": statistics.median(s[f] for s in seeds.values()),
                    "range": [min(s[f] for s in seeds.values()), max(s[f] for s in seeds.values())],
                }
                for f in FIELDS
            }
        pairs = [(arms["grouped"][k], arms["shuffled"][k]) for k in arms["shuffled"]]
        row["ratio"] = {
            f: statistics.median(g[f] / s[f] for g, s in pairs)
            for f in ("samples_per_s", "train_s", "energy_wh", "energy_to_best_wh")
        }
        row["accuracy_points"] = statistics.median(
            100 * (g["accuracy"] - s["accuracy"]) for g, s in pairs
        )
        row["val_loss_delta"] = statistics.median(
            g["best_val_loss"] - s["best_val_loss"] for g, s in pairs
        )
        out[method] = row
    return out


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "# Batches grouped by length vs shuffled (SST-2 sample)",
        "",
        f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores; seeds "
        f"{meta['seeds']}; {meta['setup']}. Medians [range]; ratios are grouped / shuffled per "
        "seed, then the median. Energy is modelled (no counters here).",
        "",
        "| method | arm | samples/s | train s | Wh run (model) | Wh to best (model) | "
        "best val loss | dev accuracy % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, row in summary.items():
        for arm in ARMS:
            r = row[arm]
            acc = r["accuracy"]
            lo, hi = (100 * v for v in acc["range"])
            lines.append(
                f"| {method} | {arm} | {r['samples_per_s']['median']:.0f} | "
                f"{r['train_s']['median']:.1f} | {r['energy_wh']['median']:.3g} | "
                f"{r['energy_to_best_wh']['median']:.3g} | {r['best_val_loss']['median']:.4f} | "
                f"{100 * acc['median']:.2f} [{lo:.2f}–{hi:.2f}] |"
            )
        q = row["ratio"]
        lines.append(
            f"| {method} | grouped / shuffled | {q['samples_per_s']:.2f}x | {q['train_s']:.2f}x | "
            f"{q['energy_wh']:.2f}x | {q['energy_to_best_wh']:.2f}x | "
            f"{row['val_loss_delta']:+.4f} | {row['accuracy_points']:+.2f} points |"
        )
    return "\n".join(lines) + "\n"


def padding() -> None:
    """Tokens computed per phrase, padded batches of 32, shuffled against grouped."""
    import pandas as pd

    from greentune.config import ModelConfig
    from greentune.models.backbone import load_tokenizer
    from greentune.train.order import epoch_order

    texts = pd.read_csv(SST2 / "train.csv", keep_default_na=False)["text"].tolist()
    tokenizer = load_tokenizer(ModelConfig())
    max_length = int(
        next(o for o in DATASETS["sst2"] if o.startswith("text.max_length=")).split("=")[1]
    )
    lengths = np.array(
        [len(t) for t in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    )
    size = 32

    def per_phrase(order: np.ndarray) -> float:
        padded = sum(
            len(b) * lengths[b].max() for b in np.split(order, range(size, len(order), size))
        )
        return float(padded / len(order))

    figures = {
        "phrases": len(lengths),
        "batch_size": size,
        "mean_tokens": float(lengths.mean()),
        "shuffled_tokens_per_phrase": per_phrase(epoch_order(len(lengths), 0, 0, size)),
        "grouped_tokens_per_phrase": per_phrase(epoch_order(len(lengths), 0, 0, size, lengths)),
    }
    md = (
        "# Tokens a padded batch computes per SST-2 phrase\n\n"
        f"Machine: {machine_info()['cpu']}; all {figures['phrases']:,} training phrases, MiniLM's "
        f"tokenizer, max length {max_length}, batches of {size}, seed 0, epoch 0.\n\n"
        "| phrase's own tokens (mean) | shuffled batches | grouped batches |\n|---|---|---|\n"
        f"| {figures['mean_tokens']:.1f} | {figures['shuffled_tokens_per_phrase']:.1f} | "
        f"{figures['grouped_tokens_per_phrase']:.1f} |\n"
    )
    write_results(RESULTS / "grouping-padding", {"commit": git_commit(), **figures}, md)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default="full,lora")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--train-rows", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--tag", default="")
    parser.add_argument("--padding", action="store_true", help="count padding only, train nothing")
    args = parser.parse_args()
    if not (SST2 / "train.csv").is_file():
        sys.exit(f"{SST2} not found")
    quiet_libraries()
    if args.padding:
        return padding()
    base = [
        *DATASETS["sst2"],
        *sst2_args(args.train_rows),
        f"train.epochs={args.epochs}",
        "eval.report=false",
        "train.budget_s=null",
        "train.patience=2",
    ]
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    suffix = f"-{args.tag}" if args.tag else ""
    runs: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
        m: {arm: {} for arm in ARMS} for m in methods
    }
    lrs = {m: GRIDS.get(m, DEFAULT_GRID)[1] for m in methods}
    for seed in seeds:
        for m in methods:
            for arm, setting in ARMS.items():
                name = f"grouping{suffix}-{m}-{arm}-s{seed}"
                overrides = [*base, *METHODS[m], f"train.lr={lrs[m]}", f"seed={seed}", setting]
                runs[m][arm][str(seed)] = one_run(name, overrides)
    meta = {
        "machine": machine_info(),
        "commit": git_commit(),
        "seeds": seeds,
        "setup": f"{args.train_rows} training phrases (10 % of them validation), "
        f"{args.epochs} epochs (patience 2), lr {lrs}",
    }
    summary = summarise(runs)
    payload = {**meta, "summary": summary, "runs": runs}
    write_results(RESULTS / f"grouping{suffix}", payload, markdown(summary, meta))


if __name__ == "__main__":
    main()
