"""Text-classification recipe on the same engine: tokenise -> classifier -> PEFT -> loop -> score.

Baselines in the same run: the majority class and TF-IDF + logistic regression (scikit-learn).
Phases run inside meter windows: data, train, test, save, baseline/<name>.
"""

from __future__ import annotations

import time

import pandas as pd

from greentune.data.text import TextSplits, load_text_splits
from greentune.distributed import ranks
from greentune.evaluate.metrics import classification_metrics
from greentune.models.backbone import count_parameters, load_tokenizer, seed_everything
from greentune.models.classifier import TextClassifier, load_classifier
from greentune.results import ModelResult, RunMetrics
from greentune.tasks.classify.artifacts import save_model
from greentune.tasks.classify.baselines import text_baselines
from greentune.tasks.classify.batches import TextBatches, tokenize
from greentune.tasks.classify.predict import predict_labels, validation_scores
from greentune.train.loop import (
    LoopResult,
    configure_threads,
    threads_line,
    total_optimizer_steps,
    train,
)
from greentune.train.recipe import RECIPES, RecipeContext
from greentune.tuning.methods import MethodContext, apply_method, method_callbacks

HEAD_MODULES = ("classifier", "score")


@RECIPES.register("classify")
def run_classify(ctx: RecipeContext) -> RunMetrics:
    cfg, log, window = ctx.cfg, ctx.log, ctx.window
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
        model, result = _train_classifier(ctx, splits, batches)
    t0 = time.perf_counter()
    with window("test"):
        pred = predict_labels(model, batches["test"], cfg.eval.batch_size)
    name = f"{cfg.model.backbone}-{cfg.peft.method}"
    scores = classification_metrics(splits.labels["test"], pred, len(splits.label_names))
    mine = ModelResult.from_dict(scores)
    mine.fit_s, mine.predict_s = result.state.train_s, time.perf_counter() - t0
    mine.predictions = len(pred)
    mine.energy_windows = {"fit": {"train": 1.0}, "predict": {"test": 1.0}}
    results = {name: mine}
    metrics = RunMetrics(
        task="classify",
        model=name,
        test=results,
        training=result.summary(),
        labels=splits.label_names,
    )
    if not ranks.is_main():
        return metrics
    results.update(text_baselines(splits, window))
    with window("save"):
        save_model(model, tokenizer, splits.label_names, ctx.run.model_dir)
    ctx.run.write_predictions(
        pd.DataFrame(
            {
                "model": name,
                "text": splits.texts["test"],
                "y_true": [splits.label_names[i] for i in splits.labels["test"]],
                "y_pred": [splits.label_names[i] for i in pred],
            }
        )
    )
    return metrics


def _train_classifier(
    ctx: RecipeContext, splits: TextSplits, batches: dict[str, TextBatches]
) -> tuple[TextClassifier, LoopResult]:
    cfg, log = ctx.cfg, ctx.log
    seed_everything(cfg.seed)
    inner = load_classifier(cfg.model, splits.label_names, batches["train"].pad_id)
    total_steps = total_optimizer_steps(len(batches["train"]), cfg.train)
    method = MethodContext(total_steps=total_steps, task_type="SEQ_CLS", head_modules=HEAD_MODULES)
    model = TextClassifier(apply_method(inner, cfg.peft, method))
    trainable, total = count_parameters(model)
    log(f"method {cfg.peft.method}: {trainable:,} trainable of {total:,} parameters")
    result = train(
        model,
        batches["train"],
        cfg.train,
        cfg.seed,
        validate=lambda: validation_scores(
            model, batches["val"], cfg.eval.batch_size, len(splits.label_names)
        ),
        checkpoint_dir=ctx.run.checkpoint_dir,
        resume=ctx.resume,
        callbacks=[*method_callbacks(model.model), *ctx.callbacks],
    )
    log(result.trained_line())
    return model, result
