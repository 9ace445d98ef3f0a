"""Remedies against overfitting end to end (``augment``, ``regularize``): in-process runs on
tiny-bert, one epoch each, and a refused combination through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import greentune as gt
from tests.conftest import cli, make_series, series_overrides, tiny_classify_run

SERIES_AUGMENTS = [
    "augment.jitter=0.1",
    "augment.scaling=0.1",
    "augment.magnitude_warp=0.1",
    "augment.window_slice=0.9",
    "augment.mixup=0.2",
]


def forecast_run(tmp: Path, name: str, *extra: str) -> gt.RunDir:
    csv = tmp / "load.csv"
    if not csv.exists():
        make_series().to_csv(csv, index=False)
    cfg = gt.build_config(
        overrides=[
            *series_overrides(csv, tmp / "runs", name),
            "train.epochs=1",
            "eval.baselines=[seasonal_naive_daily]",
            "train.threads=1",  # steadier on a busy machine; the same numbers
            *extra,
        ]
    )
    return gt.run(cfg, echo=lambda m: None)


def training_lines(run: gt.RunDir) -> list[str]:
    return [
        line.split("training with ", 1)[1]
        for line in run.log_path.read_text().splitlines()
        if "training with " in line
    ]


@pytest.fixture(scope="module")
def forecasts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("remedies")
    augmented = forecast_run(tmp, "aug", *SERIES_AUGMENTS, "regularize.adversarial=fgm")
    plain = forecast_run(tmp, "fgm", "regularize.adversarial=fgm")  # the same, unaugmented
    return augmented, plain


def test_a_forecast_run_with_augmentation_and_fgm_completes_and_says_so(forecasts):
    run, _ = forecasts
    assert run.status == "complete"
    assert training_lines(run) == [
        "augmentation: jitter 0.1, scaling 0.1, magnitude_warp 0.1, window_slice 0.9, mixup 0.2, "
        "p 0.5",
        "adversarial training: fgm, epsilon 0.01",
    ]
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    assert saved["augment"] == {
        "p": 0.5,
        "jitter": 0.1,
        "scaling": 0.1,
        "magnitude_warp": 0.1,
        "window_slice": 0.9,
        "mixup": 0.2,
        "deletion": 0.0,
        "swap": 0.0,
        "insertion": 0.0,
        "synonym": 0.0,
    }
    assert saved["regularize"]["adversarial"] == "fgm"
    assert run.config.augment.window_slice == 0.9  # and it reads back
    training = run.metrics.training
    assert training.steps > 0 and all(v == v for v in training.loss_curve)  # no NaN


def test_augmentation_changes_training_but_not_validation(forecasts):
    augmented, plain = forecasts
    a, b = augmented.metrics.training, plain.metrics.training
    assert len(a.loss_curve) == len(b.loss_curve) > 1
    assert a.loss_curve != b.loss_curve  # trained on augmented windows
    # the starting model scored on the validation windows: identical, so they were not augmented
    assert a.val_curve[0]["epoch"] == b.val_curve[0]["epoch"] == -1
    assert a.val_curve[0]["val_loss"] == b.val_curve[0]["val_loss"]
    assert a.val_curve[-1]["val_loss"] != b.val_curve[-1]["val_loss"]


def test_a_classification_run_with_text_augmentation_and_every_regulariser_completes(tmp_path):
    run = tiny_classify_run(
        tmp_path,
        120,
        0,
        "augment.deletion=0.1",
        "augment.swap=0.1",
        "augment.synonym=0.2",
        "regularize.label_smoothing=0.1",
        "regularize.rdrop=0.5",
        "model.dropout=0.1",
        "regularize.adversarial=fgm",  # on LoRA's frozen word embeddings, around R-Drop
    )
    assert run.status == "complete"
    assert training_lines(run) == [
        "augmentation: deletion 0.1, swap 0.1, synonym 0.2, p 0.5",
        "label smoothing 0.1",
        "R-Drop, KL weight 0.5",
        "adversarial training: fgm, epsilon 0.01",
    ]
    training = run.metrics.training
    assert training.steps == len(training.loss_curve) > 0
    assert all(v == v for v in training.loss_curve) and training.val_curve[0]["epoch"] == -1
    assert run.metrics.result.scores["macro_f1"] >= 0


def test_a_refused_combination_is_one_line_and_exit_code_2(tmp_path):
    result = cli(
        "run",
        "task=classify",
        "augment.jitter=0.1",
        f"text.path={tmp_path / 'never-read.csv'}",  # refused before any data is read
        f"output_dir={tmp_path}/runs",
        "name=bad",
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("error: augment.jitter changes series; task=classify")
