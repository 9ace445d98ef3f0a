"""Why light methods sat at chance on SST-2 (issue 18): what a frozen all-MiniLM-L6-v2 offers a
linear head under each pooling. Logistic regression (scikit-learn) on the frozen model's
features of a seeded sample of SST-2's phrases, standardised on the fitting rows, its C chosen
on a 10 % validation split of that sample (never on dev) from a grid wide enough that no choice
sits at its edge (the table says if one does), scored once on the 872 dev sentences.

    .venv/bin/python benchmarks/pooling.py [--train-rows 1347] [--max-length 66]

Features: ``cls`` the [CLS] token's last state; ``pooler`` BERT's pooler on it (dense + tanh:
what transformers' BertForSequenceClassification reads; this checkpoint never trained it);
``mean`` the mean of the token states the attention mask keeps (what sentence-transformers
trained the model for, and greentune's ``model.pooling=mean``).

Writes benchmarks/results/pooling.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pandas as pd
import torch
from machine import machine_info

from greentune.config import ModelConfig
from greentune.models.backbone import backbone_config, pool

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SST2 = ROOT.parent / "shared" / "data" / "text" / "sst2"
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
POOLINGS = ("cls", "pooler", "mean")


def features(texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    from transformers import AutoModel, AutoTokenizer

    _, weights = backbone_config(ModelConfig())
    tokenizer = AutoTokenizer.from_pretrained(weights, local_files_only=True)
    model = AutoModel.from_pretrained(weights, local_files_only=True).eval()
    out: dict[str, list[np.ndarray]] = {p: [] for p in POOLINGS}
    for i in range(0, len(texts), 64):
        batch = tokenizer(texts[i : i + 64], padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt")  # fmt: skip
        with torch.no_grad():
            o = model(**batch)
        states = o.last_hidden_state
        out["cls"].append(pool(states, batch["attention_mask"], "cls").numpy())
        out["pooler"].append(o.pooler_output.numpy())
        out["mean"].append(pool(states, batch["attention_mask"], "mean").numpy())
    return {p: np.concatenate(v) for p, v in out.items()}


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser()
    parser.add_argument("--train-rows", type=int, default=1347)
    parser.add_argument("--max-length", type=int, default=66)
    args = parser.parse_args()
    if not (SST2 / "train.csv").is_file():
        sys.exit(f"{SST2} not found")
    torch.manual_seed(0)
    torch.set_num_threads(1)

    def probe(c: float) -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))

    train = pd.read_csv(SST2 / "train.csv", keep_default_na=False)
    train = train.sample(n=args.train_rows, random_state=0).reset_index(drop=True)
    dev = pd.read_csv(SST2 / "dev.csv", keep_default_na=False)
    n_val = len(train) // 10  # the validation share methods.py gives a sample
    t0 = time.perf_counter()
    feats = features([*train["text"], *dev["text"]], args.max_length)
    feature_s = time.perf_counter() - t0
    y = train["label"].to_numpy()
    fit, val = slice(n_val, len(train)), slice(0, n_val)
    rows = {}
    for p in POOLINGS:
        x, x_dev = feats[p][: len(train)], feats[p][len(train) :]
        val_acc = {}
        for c in C_GRID:
            clf = probe(c).fit(x[fit], y[fit])
            val_acc[c] = float(clf.score(x[val], y[val]))
        best_c = max(C_GRID, key=lambda c: (val_acc[c], -c))  # ties: the stronger penalty
        clf = probe(best_c).fit(x[fit], y[fit])
        rows[p] = {
            "C": best_c,
            "val_accuracy": val_acc,
            "at_edge": best_c in (C_GRID[0], C_GRID[-1]),
            "dev_accuracy": float(clf.score(x_dev, dev["label"].to_numpy())),
        }
        print(p, rows[p], flush=True)
    result = {"machine": machine_info(), "setup": vars(args) | {"fit_rows": len(train) - n_val,
              "val_rows": n_val, "dev_rows": len(dev), "C_grid": C_GRID,
              "feature_s": feature_s}, "rows": rows}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pooling.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# What a frozen all-MiniLM-L6-v2 offers a linear head, per pooling",
        "",
        f"Machine: {result['machine']['cpu']}. Logistic regression on {len(train) - n_val:,} "
        f"SST-2 phrases (seeded sample), features standardised, C chosen on {n_val} held-out "
        f"phrases from {C_GRID}, scored once on the {len(dev)} dev sentences. Frozen-feature "
        f"extraction {feature_s:.0f} s on 1 thread.",
        "",
        "| pooling | C (validation) | validation accuracy % | dev accuracy % |",
        "|---|---|---|---|",
    ]
    for p, r in rows.items():
        edge = " (grid edge)" if r["at_edge"] else ""
        lines.append(f"| {p} | {r['C']:g}{edge} | {100 * r['val_accuracy'][r['C']]:.2f} | "
                     f"{100 * r['dev_accuracy']:.2f} |")  # fmt: skip
    (RESULTS / "pooling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
