"""Text-classification recipe on the same engine: tokenise -> classifier -> PEFT -> loop -> score.

Baselines in the same run: the majority class and TF-IDF + logistic regression (scikit-learn).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from greentune.config import RunConfig
from greentune.data.text import TextSplits, load_text_splits, pad_tokens
from greentune.distributed import ranks
from greentune.evaluate.metrics import classification_metrics
from greentune.models.backbone import count_parameters, load_tokenizer, seed_everything
from greentune.models.classifier import (
    TextClassifier,
    load_classifier,
    save_classifier,
)
from greentune.rundir import read_metrics, replace_dir, write_json, write_parquet
from greentune.train.loop import (
    LoopResult,
    Progress,
    Window,
    configure_threads,
    no_window,
    threads_line,
    total_optimizer_steps,
    train,
)
from greentune.tuning.methods import MethodContext, apply_method, step_hook

Log = Callable[[str], None]
HEAD_MODULES = ("classifier", "score")


@dataclass
class TextBatches:
    """Token ids per text; each batch is padded to its longest text only (see STACK.md)."""

    tokens: list[np.ndarray]
    labels: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return len(self.tokens)

    def get(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        batch = pad_tokens([self.tokens[i] for i in idx], self.pad_id)
        batch["labels"] = torch.from_numpy(self.labels[idx])
        return batch


def tokenize(tokenizer: Any, texts: list[str], labels: np.ndarray, max_length: int) -> TextBatches:
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    tokens = [np.asarray(t, dtype=np.int64) for t in enc["input_ids"]]
    return TextBatches(tokens, labels, int(tokenizer.pad_token_id or 0))


@torch.no_grad()
def predict_labels(model: TextClassifier, batches: TextBatches, batch_size: int) -> np.ndarray:
    model.eval()
    mine = ranks.shard(len(batches))  # several processes: each its shard, gathered once
    # Sorting by length keeps padding small; results are put back in input order.
    order = np.argsort([len(batches.tokens[i]) for i in mine], kind="stable")
    preds = np.empty(len(mine), dtype=np.int64)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        preds[idx] = model(batches.get(mine[idx])).argmax(-1).numpy()
    return ranks.gather_shards(preds, len(batches))


def run_classify(
    cfg: RunConfig,
    run_dir: Path,
    log: Log,
    resume: bool = False,
    progress: Progress | None = None,
    window: Window = no_window,
) -> dict[str, Any]:
    """Classification recipe; phases in windows data, train, test, save, baseline/<name>."""
    log(threads_line(configure_threads(cfg.train)))
    with window("data"):
        splits = load_text_splits(cfg.text, cfg.seed)
        tokenizer = load_tokenizer(cfg.model)
        batches = {
            k: tokenize(tokenizer, splits.texts[k], splits.labels[k], cfg.text.max_length)
            for k in ("train", "val", "test")
        }
    log(
        f"data: {splits.origin}: {len(splits.label_names)} classes; "
        + " / ".join(f"{k} {len(splits.texts[k])}" for k in ("train", "val", "test"))
    )
    with window("train"):
        model, result = _train_classifier(
            cfg, splits, batches, run_dir, log, resume, progress, window
        )
    t0 = time.perf_counter()
    with window("test"):
        pred = predict_labels(model, batches["test"], cfg.eval.batch_size)
    name = f"{cfg.model.backbone}-{cfg.peft.method}"
    n = len(splits.label_names)
    results = {
        name: {
            **classification_metrics(splits.labels["test"], pred, n),
            "fit_s": result.state.train_s,
            "predict_s": time.perf_counter() - t0,
            "predictions": len(pred),
            "energy_windows": {"fit": {"train": 1.0}, "predict": {"test": 1.0}},
        },
        **(text_baselines(splits, window) if ranks.is_main() else {}),
    }
    if not ranks.is_main():
        return {"task": "classify", "model": name, "test": results}
    with window("save"):
        tmp = run_dir / ".model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted save
        save_classifier(model, tmp, tokenizer, splits.label_names)
        replace_dir(tmp, run_dir / "model")
    write_parquet(
        run_dir / "predictions.parquet",
        pd.DataFrame(
            {
                "model": name,
                "text": splits.texts["test"],
                "y_true": [splits.label_names[i] for i in splits.labels["test"]],
                "y_pred": [splits.label_names[i] for i in pred],
            }
        ),
    )
    metrics = {
        "schema_version": 1,
        "task": "classify",
        "model": name,
        "labels": splits.label_names,
        "test": results,
        "training": {
            "steps": result.state.step,
            "train_s": result.state.train_s,
            "samples_per_s": result.samples_per_s,
            "trainable_parameters": result.trainable,
            "total_parameters": result.total,
            "loss_curve": [round(r["loss"], 6) for r in result.state.history],
        },
    }
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def _train_classifier(
    cfg: RunConfig,
    splits: TextSplits,
    batches: dict[str, TextBatches],
    run_dir: Path,
    log: Log,
    resume: bool,
    progress: Progress | None,
    window: Window,
) -> tuple[TextClassifier, LoopResult]:
    seed_everything(cfg.seed)
    inner = load_classifier(cfg.model, splits.label_names, batches["train"].pad_id)
    total_steps = total_optimizer_steps(len(batches["train"]), cfg.train)
    ctx = MethodContext(total_steps=total_steps, task_type="SEQ_CLS", head_modules=HEAD_MODULES)
    model = TextClassifier(apply_method(inner, cfg.peft, ctx))
    trainable, total = count_parameters(model)
    log(f"method {cfg.peft.method}: {trainable:,} trainable of {total:,} parameters")

    def val_loss() -> float:
        b = batches["val"]
        mine = ranks.shard(len(b))
        total = sum(
            float(model.loss(model(b.get(mine[i : i + 64])), b.get(mine[i : i + 64])))
            * len(mine[i : i + 64])
            for i in range(0, len(mine), 64)
        )
        total, n = ranks.all_sum([total, float(len(mine))])
        return total / max(n, 1.0)

    result = train(
        model,
        batches["train"],
        cfg.train,
        cfg.seed,
        validate=val_loss,
        checkpoint_dir=run_dir / "checkpoints",
        resume=resume,
        progress=progress,
        step_hook=step_hook(model.model),
        window=window,
    )
    log(
        f"trained {result.state.step} steps in {result.state.train_s:.1f} s "
        f"({result.samples_per_s:.0f} samples/s)"
    )
    return model, result


def text_baselines(splits: TextSplits, window: Window = no_window) -> dict[str, dict[str, Any]]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    n = len(splits.label_names)
    y_train, y_test = splits.labels["train"], splits.labels["test"]
    out: dict[str, dict[str, Any]] = {}
    with window("baseline/majority_class"):
        majority = int(np.bincount(y_train, minlength=n).argmax())
        pred = np.full_like(y_test, majority)
    out["majority_class"] = {**classification_metrics(y_test, pred, n), "fit_s": 0.0}
    t0 = time.perf_counter()
    with window("baseline/tfidf_logreg"):
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
        clf = LogisticRegression(max_iter=2000).fit(
            vec.fit_transform(splits.texts["train"]), y_train
        )
        t1 = time.perf_counter()
        pred = clf.predict(vec.transform(splits.texts["test"]))
    out["tfidf_logreg"] = {
        **classification_metrics(y_test, pred, n),
        "fit_s": t1 - t0,
        "predict_s": time.perf_counter() - t1,
    }
    for name, row in out.items():
        busy_s = row["fit_s"] + row.get("predict_s", 0.0)
        share = row["fit_s"] / busy_s if busy_s > 0 else 0.0
        own = f"baseline/{name}"
        row["predictions"] = len(y_test)
        row["energy_windows"] = {"fit": {own: share}, "predict": {own: 1.0 - share}}
    return out


def evaluate_classifier_run(
    run: Path, cfg: RunConfig, loaded: tuple[Any, Any, list[str]]
) -> dict[str, Any]:
    """Score a loaded (classifier, tokenizer, labels) on the run's test split again."""
    metrics = read_metrics(run)
    splits = load_text_splits(cfg.text, cfg.seed)
    model, tokenizer, labels = loaded
    b = tokenize(tokenizer, splits.texts["test"], splits.labels["test"], cfg.text.max_length)
    pred = predict_labels(model, b, cfg.eval.batch_size)
    metrics["test"][metrics["model"]].update(
        classification_metrics(splits.labels["test"], pred, len(labels))
    )
    write_json(run / "metrics.json", metrics)
    return metrics
