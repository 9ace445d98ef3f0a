"""greentune compress end to end on tiny runs: every method, export parity, the quality guard,
variants used by evaluate and predict, text classification, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from greentune.cli import app, commands, compress  # noqa: F401
from tests.conftest import make_series, series_overrides

runner = CliRunner()
ALL = ["int8-dynamic", "onnx", "onnx-int8", "prune", "prune-layers", "distill"]


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def forecast_run(tmp_path_factory) -> Path:
    """A tiny forecaster trained long enough that its network (not only the ridge skip path)
    shapes the forecast, so compressing the network changes something."""
    tmp = tmp_path_factory.mktemp("cmp")
    csv = tmp / "load.csv"
    make_series().to_csv(csv, index=False)
    result = invoke(
        "run",
        *series_overrides(csv, tmp / "runs"),
        "train.epochs=3",
        "train.lr=0.003",
        "train.patience=null",
        "eval.baselines=[seasonal_naive_daily]",
    )
    assert result.exit_code == 0, result.output
    run = tmp / "runs" / "r"
    from safetensors.torch import load_file

    assert float(load_file(str(run / "model" / "heads.safetensors"))["head.weight"].abs().max()) > 0
    return run


@pytest.fixture(scope="module")
def compressed(forecast_run) -> dict:
    result = invoke(
        "compress", str(forecast_run), *[a for m in ALL for a in ("-m", m)], "--rounds", "1"
    )
    assert result.exit_code == 0, result.output
    return json.loads((forecast_run / "compression.json").read_text())


def test_every_method_becomes_a_run_linked_to_its_parent(forecast_run, compressed):
    assert [v["method"] for v in compressed["variants"]] == ALL
    assert compressed["reference"]["name"] == "fp32"
    for v in compressed["variants"]:
        assert v["status"] == "accepted", v
        run = Path(v["run"])
        info = json.loads((run / "run.json").read_text())
        assert info["status"] == "complete"
        assert info["parent"] == str(forecast_run)
        assert info["compression"]["method"] == v["method"]
        for key in ("size_bytes", "parameters", "throughput_per_s"):
            assert v[key] > 0, key
        assert v["latency_b1_ms"]["p95"] >= v["latency_b1_ms"]["median"] > 0
        assert v["timed_calls"] == {"b1": 20, "b32": 4}
        ledger = json.loads((run / "energy.json").read_text())
        names = {r["window"] for r in ledger["rows"]}
        assert {"build", "test", "bench/b32-0"} <= names
        kinds = {r["kind"] for r in ledger["rows"] if r["window"] in ("build", "bench/b32-0")}
        assert [v["energy_kind"]] == sorted(kinds) == ["model"]  # no counters on CI machines


def test_the_table_says_how_energy_was_obtained(compressed):
    from rich.console import Console

    from greentune.cli.compress import compression_table

    console = Console(width=250, record=True)
    console.print(compression_table(compressed))
    assert compressed["reference"]["energy_kind"] == "model"
    assert "Wh/1k (model)" in console.export_text()


def test_what_each_method_did(compressed):
    by = {v["method"]: v for v in compressed["variants"]}
    ref = compressed["reference"]
    assert by["onnx"]["notes"]["max_abs_diff"] < 1e-4  # fp32 export agrees with PyTorch
    assert by["onnx"]["metrics"]["mape"] == pytest.approx(ref["metrics"]["mape"], rel=1e-4)
    assert 0 < by["int8-dynamic"]["notes"]["max_abs_diff"] < 0.5  # int8 changed the outputs
    assert by["onnx-int8"]["size_bytes"] < 0.5 * by["onnx"]["size_bytes"]
    assert by["prune"]["notes"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert by["prune-layers"]["notes"]["of_layers"] == 2
    assert len(by["prune-layers"]["notes"]["layers_kept"]) == 1
    assert by["distill"]["notes"]["layers_kept"] == [0]
    for method in ("prune-layers", "distill"):
        assert by[method]["parameters"] < ref["parameters"]


def test_int8_weights_are_stored_as_int8(compressed):
    run = Path(next(v["run"] for v in compressed["variants"] if v["method"] == "int8-dynamic"))
    state = torch.load(run / "model" / "quantized.pt", weights_only=True)
    packed = [k for k in state if k.endswith("_packed_params._packed_params")]
    assert packed, list(state)[:5]
    assert not (run / "model" / "backbone" / "model.safetensors").exists()


@pytest.mark.parametrize("method", ["int8-dynamic", "onnx", "prune-layers"])
def test_evaluate_uses_the_variant_and_reproduces_its_score(compressed, method):
    v = next(v for v in compressed["variants"] if v["method"] == method)
    result = invoke("evaluate", v["run"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((Path(v["run"]) / "metrics.json").read_text())
    assert metrics["model"].endswith(f"+{method}")
    assert metrics["test"][metrics["model"]]["mape"] == pytest.approx(v["metrics"]["mape"])
    assert "seasonal_naive_daily" in metrics["test"]  # the parent's baselines come along


def test_predict_with_an_onnx_variant_matches_the_parent(tmp_path, forecast_run, compressed):
    onnx_run = next(v["run"] for v in compressed["variants"] if v["method"] == "onnx")
    data = tmp_path / "recent.csv"
    make_series(days=12, seed=3).to_csv(data, index=False)
    frames = []
    for run in (str(forecast_run), onnx_run):
        out = tmp_path / f"{Path(run).name}.csv"
        result = invoke(
            "predict", run, "--data", str(data), "--out", str(out), "--origins", "daily"
        )
        assert result.exit_code == 0, result.output
        frames.append(pd.read_csv(out))
    assert len(frames[0]) == len(frames[1]) > 0
    col = "load_mw_forecast"
    np.testing.assert_allclose(frames[0][col], frames[1][col], rtol=1e-4, atol=1e-3)


def test_the_guard_rejects_a_worse_variant_and_says_why(forecast_run, compressed):
    # The skip path's ~10^4 ridge coefficients in one per-tensor int8 scale: clearly worse.
    result = invoke(
        "compress",
        str(forecast_run),
        "-m",
        "onnx-int8:skip_int8=1",
        "--max-metric-drop",
        "0.1%",
        "--rounds",
        "1",
    )
    assert result.exit_code == 1, result.output
    assert "rejected" in result.output and "mape worsened by" in result.output
    report = json.loads((forecast_run / "compression.json").read_text())
    (row,) = report["variants"]
    assert row["status"] == "rejected" and row["metric_drop"] > 0.001
    assert not (forecast_run.parent / row["name"]).exists()
    assert not list(forecast_run.parent.glob(".*tmp*"))


def test_refusals(forecast_run, compressed):
    cases = [
        (["-m", "zip"], "unknown compression method 'zip'; valid choices: distill, int8-dynamic"),
        (["-m", "prune:amount=3"], "unknown option 'amount=3'; prune takes sparsity="),
        (["-m", "prune:sparsity=2"], "sparsity must be in (0, 1)"),
        (["-m", "onnx"], "already exists; delete it or pass --replace"),
        (["-m", "onnx", "--max-metric-drop", "a lot"], "--max-metric-drop must look like 1%"),
    ]
    for args, message in cases:
        result = invoke("compress", str(forecast_run), *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)
    onnx_run = next(v["run"] for v in compressed["variants"] if v["method"] == "onnx")
    result = invoke("compress", onnx_run, "-m", "int8-dynamic")
    assert result.exit_code == 2 and "holds a onnx model" in result.output


def test_classifier_variants(tmp_path):
    from greentune.data.text import synthetic_incidents

    path = tmp_path / "t.csv"
    synthetic_incidents(160, seed=1).to_csv(path, index=False)
    args = [
        "task=classify",
        "model.backbone=tiny-bert",
        "train.epochs=6",
        "train.batch_size=16",
        "train.patience=null",
        "train.lr=0.003",
        "text.max_length=32",
        "name=c",
        f"text.path={path}",
        f"output_dir={tmp_path / 'runs'}",
    ]
    assert invoke("run", *args).exit_code == 0
    run = tmp_path / "runs" / "c"
    result = invoke(
        "compress",
        str(run),
        "-m",
        "int8-dynamic",
        "-m",
        "onnx-int8",
        "-m",
        "distill:epochs=2",
        "--rounds",
        "1",
    )
    assert result.exit_code == 0, result.output
    report = json.loads((run / "compression.json").read_text())
    assert report["headline"] == "macro_f1" and report["higher_is_better"]
    for v in report["variants"]:
        assert v["status"] == "accepted"
        assert invoke("evaluate", v["run"]).exit_code == 0
        metrics = json.loads((Path(v["run"]) / "metrics.json").read_text())
        assert metrics["test"][metrics["model"]]["macro_f1"] == pytest.approx(
            v["metrics"]["macro_f1"]
        )
    onnx_dir = Path(next(v["run"] for v in report["variants"] if v["method"] == "onnx-int8"))
    assert (onnx_dir / "model" / "tokenizer.json").is_file() or any(
        (onnx_dir / "model" / "backbone").glob("tokenizer*")
    )
    shutil.rmtree(tmp_path / "runs")


def test_text_encoder_forecaster_exports_with_a_dynamic_token_axis(tmp_path):
    csv = tmp_path / "load.csv"
    make_series().to_csv(csv, index=False)
    args = [*series_overrides(csv, tmp_path / "runs", "t"), "model.encoder=text"]
    result = invoke("run", *args, "train.max_steps=4", "eval.baselines=[]")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "t"
    result = invoke("compress", str(run), "-m", "onnx", "-m", "int8-dynamic", "--rounds", "1")
    assert result.exit_code == 0, result.output
    report = json.loads((run / "compression.json").read_text())
    by = {v["method"]: v for v in report["variants"]}
    assert by["onnx"]["notes"]["max_abs_diff"] < 1e-4  # batches of 1 and 32, other lengths
    variant = json.loads((run.parent / "t-onnx" / "model" / "variant.json").read_text())
    assert variant["inputs"] == ["input_ids", "attention_mask", "past", "future"]
    assert invoke("evaluate", str(run.parent / "t-onnx")).exit_code == 0
