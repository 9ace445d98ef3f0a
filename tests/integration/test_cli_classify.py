"""Text classification on the same engine: run -> evaluate, CSV / JSONL / datasets folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from greentune.cli import (
    app,
    commands,  # noqa: F401
)
from greentune.data.text import synthetic_incidents

runner = CliRunner()
ARGS = [
    "task=classify",
    "model.backbone=tiny-bert",
    "eval.report=false",
    "train.epochs=12",
    "train.batch_size=16",
    "train.patience=null",
    "train.lr=0.003",
    "text.max_length=32",
    "name=c",
]


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "datasets"])
def test_classify_run_and_evaluate(tmp_path, fmt):
    frame = synthetic_incidents(160, seed=1)
    if fmt == "csv":
        path = tmp_path / "t.csv"
        frame.to_csv(path, index=False)
    elif fmt == "jsonl":
        path = tmp_path / "t.jsonl"
        frame.to_json(path, orient="records", lines=True)
    else:
        from datasets import Dataset

        path = tmp_path / "ds"
        Dataset.from_pandas(frame).save_to_disk(str(path))
    result = invoke(
        "run", *ARGS, f"text.path={path}", f"output_dir={tmp_path}/runs", "peft.method=full"
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "c"
    metrics = json.loads((run / "metrics.json").read_text())
    ours = metrics["test"]["tiny-bert-full"]
    assert metrics["labels"] == ["billing", "outage", "vegetation", "voltage"]
    confusion = ours["confusion"]
    assert sum(map(sum, confusion)) == 32  # 20 % of 160
    assert ours["accuracy"] == pytest.approx(sum(confusion[i][i] for i in range(4)) / 32)
    # templated classes are easy: even a tiny random transformer learns them
    assert ours["accuracy"] > metrics["test"]["majority_class"]["accuracy"]
    assert metrics["test"]["tfidf_logreg"]["accuracy"] >= 0.9
    for row in metrics["test"].values():  # every model has its energy bill
        assert row["energy_wh"] >= 0 and "macro_f1_per_kwh" in row
    assert metrics["energy"]["quality_metric"] == "macro_f1"
    windows = {r["window"] for r in json.loads((run / "energy.json").read_text())["rows"]}
    assert {"data", "train", "train/epoch-0", "test", "baseline/tfidf_logreg"} <= windows
    result = invoke("evaluate", str(run))
    assert result.exit_code == 0, result.output
    again = json.loads((run / "metrics.json").read_text())["test"]["tiny-bert-full"]
    assert again["accuracy"] == ours["accuracy"] and again["confusion"] == confusion


def test_classify_lora_saves_an_adapter_with_the_head(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    path = tmp_path / "t.csv"
    synthetic_incidents(80).to_csv(path, index=False)
    result = invoke(
        "run", *ARGS, "train.epochs=1", f"text.path={path}", f"output_dir={tmp_path}/runs"
    )
    assert result.exit_code == 0, result.output
    model_dir = tmp_path / "runs" / "c" / "model"
    base = AutoModelForSequenceClassification.from_pretrained(model_dir / "backbone")
    model = PeftModel.from_pretrained(base, model_dir / "adapter")
    assert model.config.id2label[0] == "billing"
    assert json.loads((model_dir / "labels.json").read_text())[3] == "voltage"


def test_classify_bad_inputs(tmp_path):
    path = tmp_path / "t.csv"
    frame = synthetic_incidents(40)
    frame.loc[7, "text"] = ""
    frame.to_csv(path, index=False)
    result = invoke("run", *ARGS, f"text.path={path}", f"output_dir={tmp_path}/runs")
    assert result.exit_code == 2 and "column 'text' is empty at row 8" in " ".join(
        result.output.split()
    )
    result = invoke(
        "run", *ARGS, f"text.path={path}", "text.label_col=category", f"output_dir={tmp_path}/r2"
    )
    assert result.exit_code == 2 and "column 'category' (text.label_col) not found" in " ".join(
        result.output.split()
    )


def test_select_on_accuracy_keeps_the_most_accurate_validated_model(tmp_path):
    path = tmp_path / "t.csv"
    synthetic_incidents(120, seed=2).to_csv(path, index=False)
    args = [a for a in ARGS if not a.startswith("train.epochs")]
    out = tmp_path / "runs"
    result = invoke(
        "run",
        *args,
        "train.epochs=4",
        "train.select_on=accuracy",
        f"text.path={path}",
        f"output_dir={out}",
        "train.callbacks=[loss-log]",
    )
    assert result.exit_code == 0, result.output
    training = json.loads((out / "c" / "metrics.json").read_text())["training"]
    curve = training["val_curve"]
    assert [r["epoch"] for r in curve] == [-1, 0, 1, 2, 3]
    accuracies = [r["val_accuracy"] for r in curve]
    first_best = accuracies.index(max(accuracies))  # ties: the first best is kept
    assert training["best_epoch"] == curve[first_best]["epoch"]
    assert training["selected_on"] == "accuracy"
    assert training["best_val_loss"] == curve[first_best]["val_loss"]
    n_val = 12  # text.val: 10 % of the 120 texts
    for row in curve:  # accuracy on the validation texts: a whole number of them right
        assert set(row) == {"epoch", "step", "val_loss", "val_accuracy", "val_macro_f1"}
        assert round(row["val_accuracy"] * n_val, 6) == round(row["val_accuracy"] * n_val)
    log = (out / "c" / "log.txt").read_text()
    assert "validation at step 0: loss " in log and ", accuracy " in log and ", macro f1 " in log
    start = f"{curve[0]['val_loss']:.6g}"
    if training["best_epoch"] == -1:  # the trained line: the kept model's loss against the start's
        assert f"no epoch beat the starting point on validation (loss {start}): kept it" in log
    else:
        best, loss = training["best_epoch"], training["best_val_loss"]
        assert f"best epoch {best} (validation loss {loss:.6g}, " in log
        assert f"the start's {start})" in log


def test_validation_scores_loss_is_mean_loss_and_accuracy_is_the_predictions():
    import numpy as np
    import torch

    from greentune.config import ModelConfig
    from greentune.evaluate.metrics import classification_metrics
    from greentune.models.backbone import load_tokenizer
    from greentune.models.classifier import TextClassifier, load_classifier
    from greentune.tasks.base import mean_loss
    from greentune.tasks.classify.batches import tokenize
    from greentune.tasks.classify.predict import predict_labels, validation_scores

    frame = synthetic_incidents(40, seed=3)
    names = sorted(frame["label"].unique())
    labels = np.array([names.index(v) for v in frame["label"]])
    cfg = ModelConfig(backbone="tiny-bert")
    tokenizer = load_tokenizer(cfg)
    batches = tokenize(tokenizer, list(frame["text"]), labels, 32)
    model = TextClassifier(load_classifier(cfg, names, batches.pad_id)).eval()
    grad_on: list[bool] = []
    model.register_forward_hook(lambda *_: grad_on.append(torch.is_grad_enabled()))
    scores = validation_scores(model, batches, 16, len(names))
    assert scores["val_loss"] == mean_loss(model, batches, 16)
    assert grad_on and not any(grad_on)  # validating builds no autograd graph
    expected = classification_metrics(labels, predict_labels(model, batches, 16), len(names))
    assert scores["val_accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert scores["val_macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-12)


SST2 = Path(__file__).resolve().parents[3] / "shared" / "data" / "text" / "sst2"


@pytest.mark.skipif(not (SST2 / "dev.csv").is_file(), reason="../shared/data/text/sst2 absent")
def test_shipped_sst2_config_scores_the_dev_sentences(tmp_path):
    """configs/classify/sst2.yaml as shipped, on a 300-phrase slice of the training file and a
    tiny backbone: the test split is the 872 dev sentences, validation is cut from train."""
    import pandas as pd

    config = Path(__file__).resolve().parents[2] / "configs" / "classify" / "sst2.yaml"
    train = tmp_path / "train.csv"
    pd.read_csv(SST2 / "train.csv", keep_default_na=False).head(300).to_csv(train, index=False)
    result = invoke(
        "run",
        str(config),
        f"text.path={train}",
        f"text.test_path={SST2 / 'dev.csv'}",
        "model.backbone=tiny-bert",
        "train.epochs=1",
        "eval.report=false",
        f"output_dir={tmp_path}/runs",
        "name=s",
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "runs" / "s" / "metrics.json").read_text())
    assert metrics["labels"] == ["0", "1"]
    confusion = metrics["test"]["tiny-bert-lora"]["confusion"]
    assert sum(map(sum, confusion)) == 872
    assert [sum(row) for row in confusion] == [428, 444]  # dev's class counts
    assert metrics["training"]["samples"] == 294  # 300 phrases less 2 % validation
