"""The CLI end to end on a tiny model and small data: run -> evaluate -> predict, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
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


# Trainable outside the backbone on series_overrides' data (48 -> 24 steps, 3 quantiles, 14
# input channels, hidden 32): the patch encoder's projections of the past (32 x 168 + 32) and
# of the known future (32 x 156 + 32), the head (72 x 192 + 72) and the skip path's bias (72;
# its weights hold the ridge fit). Every method trains these; the backbone's share differs.
HEADS = (32 * 168 + 32) + (32 * 156 + 32) + (72 * 192 + 72) + 72


def initial_backbone(name: str) -> dict:
    """The backbone a run of ``name`` starts from (build_model seeds with the default seed 42,
    then builds the backbone first)."""
    from greentune.config import ModelConfig
    from greentune.models.backbone import load_backbone, seed_everything

    seed_everything(42)
    return load_backbone(ModelConfig(backbone=name), keep_word_embeddings=False).state_dict()


def saved_model(run: Path) -> tuple[dict, dict, dict, dict]:
    """(training summary, adapter_config.json or {}, adapter tensors, backbone tensors)."""
    from safetensors.torch import load_file

    model = run / "model"
    training = json.loads((run / "metrics.json").read_text())["training"]
    adapter = model / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text()) if adapter.is_dir() else {}
    tensors = load_file(str(adapter / "adapter_model.safetensors")) if adapter.is_dir() else {}
    return training, config, tensors, load_file(str(model / "backbone" / "model.safetensors"))


def same_tensors(a: dict, b: dict) -> list[str]:
    import torch

    assert a.keys() == b.keys()
    return sorted(k for k in a if torch.equal(a[k], b[k]))


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
        "ensemble-mean",
        "ensemble-weighted",
    }
    assert metrics["ensembles"]["ensemble-weighted"]["members"] == ["model", "linear"]
    assert metrics["ensembles"]["ensemble-mean"]["members"] == ["model", "linear"]
    for row in metrics["test"].values():
        assert {"mae", "rmse", "mape", "smape", "mase"} <= set(row)
    assert 0 <= metrics["test"][name]["coverage"] <= 100 and metrics["test"][name]["pinball"] > 0
    pred = pd.read_parquet(run / "predictions.parquet")
    assert set(pred.model) == set(metrics["test"])
    assert len(pred) == 7 * 6 * 24  # models x daily test origins x horizon
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


def test_select_on_mape_keeps_the_epoch_with_the_lowest_validation_mape(tmp_path, tiny_csv):
    out = tmp_path / "runs"
    args = [*series_overrides(tiny_csv, out, "m"), "train.epochs=4", "train.patience=null"]
    result = invoke("run", *args, "eval.baselines=[]", "train.select_on=mape", "train.lr=3e-3")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "m" / "metrics.json").read_text())
    training = metrics["training"]
    curve = training["val_curve"]
    assert [r["epoch"] for r in curve] == [-1, 0, 1, 2, 3]
    assert all(set(r) == {"epoch", "step", "val_loss", "val_mape"} for r in curve)
    mapes = [r["val_mape"] for r in curve]
    kept = curve[mapes.index(min(mapes))]  # ties: the first best is kept
    assert training["best_epoch"] == kept["epoch"] and training["selected_on"] == "mape"
    assert training["best_val_loss"] == kept["val_loss"]
    # the curve's MAPE is the one the run's validation table gives the kept network
    assert metrics["validation"][metrics["model"]]["mape"] == pytest.approx(kept["val_mape"])
    assert (
        f"chosen on validation mape ({kept['val_mape']:.4g}" in (out / "m" / "log.txt").read_text()
    )


def test_gpt2_style_decoder_runs(tmp_path, tiny_csv):
    """A GPT-2 backbone, its attention (c_attn) adapted by LoRA and trained; the base untouched."""
    result = invoke(
        "run",
        *series_overrides(tiny_csv, tmp_path / "runs"),
        "model.backbone=tiny-gpt2",
        "train.max_steps=4",
        "eval.baselines=[]",
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "r"
    assert json.loads((run / "metrics.json").read_text())["model"] == "tiny-gpt2-patch-lora"
    config = json.loads((run / "model" / "backbone" / "config.json").read_text())
    assert (config["model_type"], config["n_embd"], config["n_layer"]) == ("gpt2", 32, 2)
    training, adapter, tensors, backbone = saved_model(run)
    assert training["steps"] == 4 and training["best_epoch"] == 0  # the trained model was kept
    assert (adapter["peft_type"], adapter["target_modules"], adapter["r"]) == (
        "LORA",
        ["c_attn"],
        8,
    )
    assert sorted(tensors) == [
        f"base_model.model.h.{i}.attn.c_attn.lora_{m}.weight" for i in (0, 1) for m in "AB"
    ]
    # c_attn maps 32 -> 96 (q, k, v); B starts at zero, so a non-zero B was trained
    for i in (0, 1):
        b = tensors[f"base_model.model.h.{i}.attn.c_attn.lora_B.weight"]
        assert b.shape == (96, 8) and bool((b != 0).all())
    assert training["trainable_parameters"] == HEADS + 2 * (8 * 32 + 96 * 8)
    assert same_tensors(backbone, initial_backbone("tiny-gpt2")) == sorted(backbone)


def test_text_encoder_runs(tmp_path, tiny_csv):
    """Windows written as text: the backbone keeps its word embeddings and the tokenizer, the
    head reads the pooled hidden state (no patch projections), LoRA trains."""
    result = invoke(
        "run",
        *series_overrides(tiny_csv, tmp_path / "runs"),
        "model.encoder=text",
        # no ridge skip path: with it, 4 steps of the text encoder end within 1e-5 (relative)
        # of the ridge start on validation, which wins or loses by machine (it lost on a Xeon);
        # without it, the start is the untrained head and the epoch beats it by 0.25 %
        "model.linear_skip=false",
        "train.max_steps=4",
        "eval.baselines=[]",
    )
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    run = tmp_path / "runs" / "r"
    assert json.loads((run / "metrics.json").read_text())["model"] == "tiny-bert-text-lora"
    model = run / "model"
    assert json.loads((model / "greentune_model.json").read_text())["encoder"] == "text"
    assert json.loads((model / "backbone" / "config.json").read_text())["vocab_size"] == 30522
    assert (model / "backbone" / "tokenizer.json").is_file()
    heads = load_file(str(model / "heads.safetensors"))
    assert {k: tuple(v.shape) for k, v in heads.items() if not k.startswith("skip")} == {
        "head.weight": (72, 32),
        "head.bias": (72,),
    }
    training, adapter, tensors, _ = saved_model(run)
    assert training["steps"] == 4 and training["best_epoch"] == 0  # the trained model was kept
    assert adapter["peft_type"] == "LORA" and sorted(adapter["target_modules"]) == [
        "query",
        "value",
    ]
    assert all(bool((v != 0).all()) for k, v in tensors.items() if "lora_B" in k)  # trained
    # LoRA on query and value of 2 layers and the head (no skip path)
    assert training["trainable_parameters"] == 4 * (8 * 32 + 32 * 8) + (72 * 32 + 72)


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


# what each method trains in tiny-bert (hidden 32, 2 layers, feed-forward 64), on top of HEADS
METHOD_PARAMETERS = {
    "adalora": 4 * (8 * 32 + 32 * 8 + 8),  # A, B and 8 singular values on query, value x 2
    "ia3": 2 * (32 + 32 + 32 + 64),  # key, value (outputs), attention.output, output (inputs)
    "ln": 5 * 2 * 32,  # the embeddings' LayerNorm and 2 per layer, weight and bias
    "full": 33_600,  # every backbone weight but the unused one-row word embedding
    "frozen": 0,
}


@pytest.mark.parametrize("method", ["adalora", "ia3", "ln", "full", "frozen"])
def test_every_method_runs_from_the_cli(tmp_path, tiny_csv, method):
    """Each method trains what it names, and only that: its adapter moved from its
    initial values (or, for full, the backbone itself), the base weights stayed where they
    started otherwise."""
    result = invoke(
        "run",
        *series_overrides(tiny_csv, tmp_path / "runs"),
        f"peft.method={method}",
        "train.max_steps=3",
        "eval.baselines=[]",
    )
    assert result.exit_code == 0, result.output
    training, adapter, tensors, backbone = saved_model(tmp_path / "runs" / "r")
    assert training["steps"] == 3 and training["best_epoch"] == 0  # the trained model was kept
    assert training["trainable_parameters"] == HEADS + METHOD_PARAMETERS[method]
    unchanged = same_tensors(backbone, initial_backbone("tiny-bert"))
    if method == "full":
        assert unchanged == ["embeddings.word_embeddings.weight"]  # frozen: never used
    else:
        assert unchanged == sorted(backbone)  # the adapter trains, the base does not
    peft_type = {"adalora": "ADALORA", "ia3": "IA3", "ln": "LN_TUNING"}.get(method)
    assert adapter.get("peft_type") == peft_type
    if method in ("full", "frozen"):
        assert not tensors
    elif method == "adalora":
        # the rank allocator ran: 8 ranks per matrix pruned to target_r = 4 on average (16 of
        # 32), and the saved adapter keeps exactly those; their singular values left zero
        kept = {k: sum(v) for k, v in adapter["rank_pattern"].items()}
        assert len(kept) == 4 and sum(kept.values()) == 16
        for name, ranks in kept.items():
            values = tensors[f"base_model.model.{name.removesuffix('.lora_E')}.lora_E"]
            assert values.shape == (ranks, 1) and bool((values != 0).all())
    elif method == "ia3":  # scaling vectors start at one
        assert len(tensors) == 8 and all(bool((v != 1).all()) for v in tensors.values())
    else:  # ln: copies of the LayerNorms, trained away from the base's
        assert len(tensors) == 10
        for key, value in tensors.items():
            base = key.removeprefix("base_model.model.").replace(".ln_tuning_layers", "")
            assert not value.equal(backbone[base]), key


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


def test_one_series_of_a_long_file_runs_and_predicts(tmp_path):
    from tests.conftest import make_series

    one = make_series()
    other = make_series(seed=1).assign(load_mw=lambda f: f.load_mw * 3)
    long = pd.concat([one.assign(zone="ME"), other.assign(zone="VT")])
    long = long.sort_values(["ts", "zone"], kind="stable")
    path, own = tmp_path / "zones.csv", tmp_path / "me.csv"
    long.to_csv(path, index=False)
    one.to_csv(own, index=False)
    result = invoke(
        "run",
        *series_overrides(path, tmp_path / "runs"),
        "--series",
        "zone=ME",
        "train.max_steps=2",
        "eval.baselines=[linear]",
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "r"
    cfg = (run / "config.yaml").read_text()
    assert "series_col: zone" in cfg and "series: ME" in cfg
    tested = pd.read_parquet(run / "predictions.parquet")
    actual = one.set_index(pd.DatetimeIndex(one.ts)).load_mw
    got = tested.drop_duplicates("time").set_index("time")
    assert len(got) == 6 * 24
    np.testing.assert_allclose(got.y_true, actual.loc[got.index.tz_localize(None)].to_numpy())
    # the run's own long file and ME's own file give the same backtest
    outs = []
    for data in (path, own):
        out = tmp_path / f"bt-{data.stem}.csv"
        result = invoke(
            "predict", str(run), "--data", str(data), "--out", str(out), "--origins", "daily"
        )
        assert result.exit_code == 0, result.output
        outs.append(pd.read_csv(out))
    pd.testing.assert_frame_equal(outs[0], outs[1])
    assert len(outs[0]) == 38 * 24  # every midnight with 2 days before and 1 after
    # errors name the series (printed as written, not taken for markup) and the file's row
    bad = long.astype({"temp_c": object})
    bad.iloc[8, bad.columns.get_loc("temp_c")] = "warm"  # ME's 5th row, row 9 of the file
    bad.to_csv(path, index=False)
    result = invoke(
        "data",
        "check",
        str(path),
        "--time-col",
        "ts",
        "--target",
        "load_mw",
        "--covariates",
        "temp_c",
        "--series",
        "zone=ME",
    )
    said = " ".join(result.output.split())
    assert result.exit_code == 2
    assert f"error: {path} [zone=ME]: column 'temp_c' is not numeric: row 9 holds 'warm'" in said


def test_series_option_needs_a_column_and_a_name(tmp_path, tiny_csv):
    result = invoke("run", *series_overrides(tiny_csv, tmp_path / "runs"), "--series", "ME")
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "--series 'ME': give the long file's series column and the series, e.g. " in said


def test_every_series_of_a_long_file_with_one_channel_independent_model(tmp_path):
    from tests.conftest import make_series

    one, two = make_series(), make_series(seed=1).assign(load_mw=lambda f: f.load_mw * 3)
    long = pd.concat([one.assign(zone="ME"), two.assign(zone="VT")]).drop(columns=["temp_c"])
    path = tmp_path / "zones.csv"
    long.sort_values(["ts", "zone"], kind="stable").to_csv(path, index=False)
    wide = pd.DataFrame({"ts": one.ts, "VT": two.load_mw, "ME": one.load_mw})  # another order
    wide.to_csv(tmp_path / "wide.csv", index=False)
    result = invoke(
        "run",
        *series_overrides(path, tmp_path / "runs"),
        "data.covariates=[]",
        "data.temperature_col=null",
        "data.series_col=zone",
        "data.multivariate=true",
        "data.channel_independent=true",
        "train.max_steps=2",
        "eval.baselines=[linear]",
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "r"
    tested = pd.read_parquet(run / "predictions.parquet")
    assert sorted(tested.target.unique()) == ["ME", "VT"]
    vt = tested[(tested.target == "VT")].drop_duplicates("time").set_index("time")
    actual = two.set_index(pd.DatetimeIndex(two.ts)).load_mw
    np.testing.assert_allclose(vt.y_true, actual.loc[vt.index.tz_localize(None)].to_numpy())
    outs = []
    for data in (path, tmp_path / "wide.csv"):  # the long file and the same series side by side
        out = tmp_path / f"bt-{data.stem}.csv"
        result = invoke(
            "predict", str(run), "--data", str(data), "--out", str(out), "--origins", "daily"
        )
        assert result.exit_code == 0, result.output
        outs.append(pd.read_csv(out))
    pd.testing.assert_frame_equal(outs[0], outs[1])
    assert {"ME_forecast", "VT_forecast"} <= set(outs[0].columns)
    wide.drop(columns=["VT"]).assign(NH=1.0).to_csv(tmp_path / "other.csv", index=False)
    result = invoke("predict", str(run), "--data", str(tmp_path / "other.csv"), "--out", "x.csv")
    said = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "the run forecasts the series ME, VT; this data comes without 'VT' and with 'NH'" in said
