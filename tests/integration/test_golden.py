"""Pinned results of two tiny deterministic runs: refactors must not change a digit.

``tests/data/golden_tiny_runs.json`` was written by greentune before the Python API (issue 11)
existed, from exactly these configs; it is never regenerated to make a change pass. Values are
compared to 1e-6 relative: on this machine they match exactly, the tolerance only absorbs
floating-point differences between CPU instruction sets.

Rows that a deliberate change of the models moved are pinned in a file of their own, named
for the change and saying why (``golden_tiny_runs_issue17.json``); the rest still match the
first file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import greentune as gt
from greentune.config import build_config
from greentune.data.text import synthetic_incidents
from tests.conftest import make_series, series_overrides

DATA = Path(__file__).parents[1] / "data"
GOLDEN = json.loads((DATA / "golden_tiny_runs.json").read_text())
MOVED = json.loads((DATA / "golden_tiny_runs_issue17.json").read_text())
MEAN_POOLED = json.loads((DATA / "golden_tiny_runs_issue18.json").read_text())
QUALITY_KEYS = ("mae", "rmse", "mse", "mape", "smape", "mase", "pinball", "coverage", "interval")


def _forecast_cfg(tmp: Path):
    csv = tmp / "load.csv"
    make_series().to_csv(csv, index=False)
    return build_config(
        overrides=[
            *series_overrides(csv, tmp / "runs", "fc"),
            "train.epochs=3",
            "train.lr=0.003",
            "model.skip_init=random",
            "eval.baselines=[seasonal_naive_daily,seasonal_naive_weekly,linear,lightgbm,random_init]",
            # the ensembles the golden file was written with (the default has added mean since)
            "eval.ensembles=[weighted]",
        ]
    )


def _classify_cfg(tmp: Path, pooling: str = "cls"):
    """The first file's run: transformers' own [CLS] head (``model.pooling`` came later)."""
    txt = tmp / "t.csv"
    synthetic_incidents(160, seed=1).to_csv(txt, index=False)
    return build_config(
        overrides=[
            "task=classify",
            f"model.pooling={pooling}",
            "model.backbone=tiny-bert",
            "train.epochs=8",
            "train.patience=null",
            "train.batch_size=16",
            "train.lr=0.003",
            "peft.method=full",
            "text.max_length=32",
            "name=cl",
            f"text.path={txt}",
            f"output_dir={tmp}/runs",
        ]
    )


def _metrics(path: Path) -> dict:
    return json.loads((path / "metrics.json").read_text())


def test_tiny_forecast_run_matches_its_golden_values(tmp_path):
    run_dir = gt.run(_forecast_cfg(tmp_path), echo=lambda m: None)
    metrics = _metrics(run_dir.path)
    assert set(metrics["test"]) == set(GOLDEN["forecast"]) | {"ensemble-weighted"}
    assert set(GOLDEN["forecast"]) - set(MOVED["forecast"]) == {
        "seasonal_naive_daily",
        "seasonal_naive_weekly",
    }
    for name, want in {**GOLDEN["forecast"], **MOVED["forecast"]}.items():
        got = metrics["test"][name]
        for key in QUALITY_KEYS:
            assert got[key] == pytest.approx(want[key], rel=1e-6), (name, key)
        assert got["predictions"] == want["predictions"]
    ens = metrics["ensembles"]["ensemble-weighted"]
    assert ens["members"] == ["model", "linear", "lightgbm"]
    assert all(sum(w) == pytest.approx(1.0, abs=1e-3) for w in ens["weights_by_step"])
    rows = json.loads((run_dir.path / "energy.json").read_text())["rows"]

    def window_wh(name: str) -> float:
        return sum(sum(r["energy_j"].values()) for r in rows if r["window"] == name) / 3600

    # billed for each member's windows once (the ridge fit inside `train` is not billed twice)
    # and its own windows: the members' validation forecasts and the weights
    windows = (
        *("train", "test", "baseline/linear", "baseline/lightgbm"),
        *("select/model", "select/linear", "select/lightgbm", "ensemble"),
    )
    want = sum(window_wh(w) for w in windows)
    assert metrics["test"]["ensemble-weighted"]["energy_wh"] == pytest.approx(want, rel=1e-9)
    # every row scored on validation too; the recommendation reads those scores
    assert set(metrics["validation"]) == set(metrics["test"])
    assert metrics["energy"]["chosen_on"] == "validation"
    val_mape = {n: v["mape"] for n, v in metrics["validation"].items()}
    assert metrics["energy"]["best"] == min(val_mape, key=val_mape.get)
    training = metrics["training"]
    assert training["loss_curve"] == pytest.approx(MOVED["forecast_loss"], abs=2e-6)
    assert [v["val_loss"] for v in training["val_curve"]] == pytest.approx(
        [v["val_loss"] for v in MOVED["forecast_val"]], rel=1e-6
    )
    assert [(v["epoch"], v["step"]) for v in training["val_curve"]] == [
        (v["epoch"], v["step"]) for v in MOVED["forecast_val"]
    ]


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_tiny_classify_run_matches_its_golden_values(pooling, tmp_path):
    run_dir = gt.run(_classify_cfg(tmp_path, pooling), echo=lambda m: None)
    metrics = _metrics(run_dir.path)
    golden = GOLDEN if pooling == "cls" else MEAN_POOLED
    rows = GOLDEN["classify"] | golden["classify"]
    assert set(metrics["test"]) == set(rows)
    for name, want in rows.items():
        got = metrics["test"][name]
        assert got["accuracy"] == pytest.approx(want["accuracy"], rel=1e-9), name
        assert got["macro_f1"] == pytest.approx(want["macro_f1"], rel=1e-9), name
        assert got["confusion"] == want["confusion"], name
    assert metrics["training"]["loss_curve"] == pytest.approx(golden["classify_loss"], abs=2e-6)
