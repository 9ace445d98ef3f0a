"""The CLI end to end on a tiny model and small data: run -> evaluate -> predict, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from greentune.cli import (
    app,
    commands,  # noqa: F401  (registers the commands)
    quiet_libraries,
)
from greentune.train.checkpoint import list_checkpoints
from tests.conftest import series_overrides

runner = CliRunner()
quiet_libraries()
FAST = ["train.epochs=2", "eval.baselines=[seasonal_naive_daily,seasonal_naive_weekly,linear]"]


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    from tests.conftest import make_series

    tmp = tmp_path_factory.mktemp("fc")
    csv = tmp / "load.csv"
    make_series().to_csv(csv, index=False)
    result = invoke(
        "run",
        *series_overrides(csv, tmp / "runs"),
        *FAST,
        "eval.baselines=[seasonal_naive_daily,seasonal_naive_weekly,linear,random_init]",
    )
    assert result.exit_code == 0, result.output
    return tmp / "runs" / "r"


def test_run_writes_a_complete_run_directory(finished_run):
    run = finished_run
    for name in ("config.yaml", "metrics.json", "predictions.parquet", "log.txt", "run.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    metrics = json.loads((run / "metrics.json").read_text())
    name = metrics["model"]
    assert name == "tiny-bert-patch-lora"
    assert set(metrics["test"]) == {
        name,
        "seasonal_naive_daily",
        "seasonal_naive_weekly",
        "linear",
        "random_init",
        "ensemble-weighted",
    }
    assert metrics["ensembles"]["ensemble-weighted"]["members"] == ["model", "linear"]
    for row in metrics["test"].values():
        assert {"mae", "rmse", "mape", "smape", "mase"} <= set(row)
    assert 0 <= metrics["test"][name]["coverage"] <= 100 and metrics["test"][name]["pinball"] > 0
    pred = pd.read_parquet(run / "predictions.parquet")
    assert set(pred.model) == set(metrics["test"])
    assert len(pred) == 6 * 6 * 24  # models x daily test origins x horizon
    assert {"q0.1", "q0.5", "q0.9"} <= set(pred.columns)
    # every model is scored on the same windows
    counts = pred.groupby("model").origin.nunique()
    assert counts.nunique() == 1
    assert (run / "model" / "adapter" / "adapter_config.json").is_file()
    assert list_checkpoints(run / "checkpoints")


def test_table_shows_every_model_side_by_side(tmp_path, tiny_csv):
    result = invoke(
        "run",
        *series_overrides(tiny_csv, tmp_path / "runs"),
        "train.max_steps=3",
        "eval.baselines=[seasonal_naive_weekly]",
    )
    assert result.exit_code == 0, result.output
    assert "test split (same windows for every model)" in result.output
    assert "seasonal_naive_weekly" in result.output and "MAPE %" in result.output
    assert "run directory:" in result.output


def test_evaluate_reproduces_the_run_metrics(finished_run):
    before = json.loads((finished_run / "metrics.json").read_text())
    result = invoke("evaluate", str(finished_run))
    assert result.exit_code == 0, result.output
    after = json.loads((finished_run / "metrics.json").read_text())
    name = before["model"]
    for key in ("mae", "rmse", "mape", "mase", "pinball", "coverage"):
        assert after["test"][name][key] == pytest.approx(before["test"][name][key], rel=1e-5)


def test_predict_next_day_and_backtest(finished_run, tmp_path):
    from tests.conftest import make_series

    new = make_series(days=5, seed=7)
    new.loc[new.index[-24:], "load_mw"] = float("nan")  # tomorrow: temperature forecast only
    path = tmp_path / "new.csv"
    new.to_csv(path, index=False)
    out = tmp_path / "forecast.csv"
    result = invoke("predict", str(finished_run), "--data", str(path), "--out", str(out))
    assert result.exit_code == 0, result.output
    fc = pd.read_csv(out)
    assert len(fc) == 24 and fc.step.tolist() == list(range(1, 25))
    assert fc.time.iloc[0] == str(new.ts.iloc[-24])
    assert (fc["load_mw_q0.1"] <= fc["load_mw_q0.9"]).all()
    assert fc.load_mw_forecast.between(50, 250).all()
    back = tmp_path / "back.csv"
    result = invoke(
        "predict", str(finished_run), "--data", str(path), "--out", str(back), "--origins", "daily"
    )
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(back)) == 3 * 24  # midnights with 48 h before and 24 h after


def test_predict_needs_the_covariate_forecast(finished_run, tmp_path):
    from tests.conftest import make_series

    path = tmp_path / "hist.csv"
    make_series(days=4).to_csv(path, index=False)
    result = invoke(
        "predict", str(finished_run), "--data", str(path), "--out", str(tmp_path / "x.csv")
    )
    assert result.exit_code == 2
    assert "needs 24 rows after the last observed 'load_mw' with temp_c filled" in result.output


def test_resume_continues_to_the_same_loss_curve(tmp_path, tiny_csv):
    args = [
        *series_overrides(tiny_csv, tmp_path / "runs", "full"),
        *FAST,
        "eval.baselines=[]",
        "train.checkpoint_every=5",
        "train.keep_checkpoints=100",
        "model.dropout=0.1",
    ]
    assert invoke("run", *args).exit_code == 0
    full_run = tmp_path / "runs" / "full"
    curve = json.loads((full_run / "metrics.json").read_text())["training"]["loss_curve"]
    # simulate a crash after step 10: keep only the checkpoints up to it, drop the outputs
    part = tmp_path / "runs" / "part"
    shutil.copytree(full_run, part)
    for ckpt in list_checkpoints(part / "checkpoints"):
        if int(ckpt.stem.split("-")[1]) > 10:
            ckpt.unlink()
    for name in ("model", "metrics.json", "predictions.parquet"):
        p = part / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    result = invoke("run", "--resume", str(part))
    assert result.exit_code == 0, result.output
    resumed = json.loads((part / "metrics.json").read_text())["training"]["loss_curve"]
    assert resumed == curve
    # the resumed session reuses the saved ridge fit instead of fitting it again
    assert "ridge fit loaded from" in (part / "log.txt").read_text()
    assert "ridge fit loaded from" not in (full_run / "log.txt").read_text()
    # the ledger keeps both sessions; the model is billed for the training of both
    ledger = json.loads((part / "energy.json").read_text())
    assert [s["command"] for s in ledger["sessions"]] == ["run", "run"]
    trains = [r for r in ledger["rows"] if r["window"] == "train"]
    assert len(trains) == 2
    metrics = json.loads((part / "metrics.json").read_text())
    billed = metrics["test"][metrics["model"]]["fit_wh"]
    assert billed == pytest.approx(sum(sum(r["energy_j"].values()) for r in trains) / 3600)


def test_gpt2_style_decoder_runs(tmp_path, tiny_csv):
    result = invoke(
        "run",
        *series_overrides(tiny_csv, tmp_path / "runs"),
        "model.backbone=tiny-gpt2",
        "train.max_steps=4",
        "eval.baselines=[]",
    )
    assert result.exit_code == 0, result.output
    assert (
        (tmp_path / "runs" / "r" / "model" / "backbone" / "config.json").read_text().count('"gpt2"')
    )


def test_text_encoder_runs(tmp_path, tiny_csv):
    result = invoke(
        "run",
        *series_overrides(tiny_csv, tmp_path / "runs"),
        "model.encoder=text",
        "train.max_steps=4",
        "eval.baselines=[]",
    )
    assert result.exit_code == 0, result.output
    assert (
        json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())["model"]
        == "tiny-bert-text-lora"
    )


def test_cli_data_options(tmp_path, tiny_csv):
    result = invoke(
        "run",
        "--data",
        str(tiny_csv),
        "--time-col",
        "ts",
        "--target",
        "load_mw",
        "--covariates",
        "temp_c",
        "--country",
        "DE",
        *series_overrides(tiny_csv, tmp_path / "runs")[4:],
        "train.max_steps=2",
        "eval.baselines=[]",
    )
    assert result.exit_code == 0, result.output
    cfg = (tmp_path / "runs" / "r" / "config.yaml").read_text()
    assert "country: DE" in cfg and "- temp_c" in cfg and "source: csv" in cfg


def test_backtest_on_a_fully_observed_file(finished_run, tmp_path):
    from tests.conftest import make_series

    path = tmp_path / "hist.csv"
    make_series(days=4, seed=3).to_csv(path, index=False)
    out = tmp_path / "bt.csv"
    result = invoke(
        "predict", str(finished_run), "--data", str(path), "--out", str(out), "--origins", "daily"
    )
    assert result.exit_code == 0, result.output
    bt = pd.read_csv(out)
    assert len(bt) == 2 * 24 and bt.load_mw_actual.notna().all()  # midnights of days 3 and 4


def test_evaluate_refuses_data_that_moved(finished_run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(finished_run, moved)
    cfg_path = moved / "config.yaml"
    cfg_path.write_text(cfg_path.read_text().replace("test: 6D", "test: 5D"))
    result = invoke("evaluate", str(moved))
    assert result.exit_code == 2
    assert "no longer gives the run's test windows" in " ".join(result.output.split())


@pytest.mark.parametrize("method", ["adalora", "ia3", "ln", "full", "frozen"])
def test_every_method_runs_from_the_cli(tmp_path, tiny_csv, method):
    result = invoke(
        "run",
        *series_overrides(tiny_csv, tmp_path / "runs"),
        f"peft.method={method}",
        "train.max_steps=3",
        "eval.baselines=[]",
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())
    assert metrics["training"]["steps"] == 3


def test_unwritable_output_is_a_clear_error(finished_run, tmp_path):
    from tests.conftest import make_series

    path = tmp_path / "hist.csv"
    make_series(days=4, seed=3).to_csv(path, index=False)
    result = invoke(
        "predict",
        str(finished_run),
        "--data",
        str(path),
        "--out",
        str(tmp_path / "no" / "such" / "dir" / "x.csv"),
        "--origins",
        "daily",
    )
    assert result.exit_code == 2 and "non-existent directory" in result.output


def test_unknown_baseline_is_refused_before_training(tmp_path, tiny_csv):
    result = invoke(
        "run", *series_overrides(tiny_csv, tmp_path / "runs"), "eval.baselines=[prophet]"
    )
    assert result.exit_code == 2
    assert "eval.baselines: unknown prophet; valid choices:" in " ".join(result.output.split())
    assert not (tmp_path / "runs" / "r" / "checkpoints").exists()
