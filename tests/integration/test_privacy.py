"""``greentune run`` under privacy.dp and ``greentune privacy audit``, end to end: the budget
in metrics.json and the ledger, the references labelled, a paused run resumed without epsilon
resetting, and bad input refused with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from greentune.cli import (  # the command modules register their commands
    app,
    commands,  # noqa: F401
    compress,  # noqa: F401
)
from greentune.cli import privacy as privacy_cli  # noqa: F401
from greentune.rundir import RunDir
from tests.conftest import cli, make_series, series_overrides, tiny_classify_run

runner = CliRunner()
BOUNDS = "data.bounds={load_mw: [0, 400], temp_c: [-20, 50]}"
DP = ["privacy.dp.target_epsilon=8", BOUNDS, "train.epochs=4", "train.patience=null"]


@pytest.fixture(scope="module")
def csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dp") / "load.csv"
    make_series().to_csv(path, index=False)
    return path


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_a_private_forecast_run_reports_its_budget(csv, tmp_path):
    result = invoke("run", *series_overrides(csv, tmp_path, "p"), *DP)
    assert result.exit_code == 0, result.output
    run = RunDir.open(tmp_path / "p")
    privacy = run.metrics.privacy
    assert privacy is not None and 0 < privacy["epsilon"] <= 8
    # the ensemble mixes non-private members (and fits its weights on raw validation data)
    assert privacy["non_private_reference"] == [
        "linear",
        "lightgbm",
        "linear_clock",
        "random_init",
        "ensemble-mean",
        "ensemble-weighted",
    ]
    assert [e["epoch"] for e in privacy["epochs"]] == [0, 1, 2, 3]
    assert privacy["epochs"][-1]["epsilon"] == pytest.approx(privacy["epsilon"])
    assert "lightgbm (non-private reference)" in result.output
    assert "-DP per training window" in result.output
    assert run.config.data.scaler == "bounds" and run.config.model.skip_init == "seasonal"
    assert "the skip path starts at seasonal init" in run.log_path.read_text()
    # the period is saved before the first checkpoint, for a resume to keep
    saved = json.loads((run.checkpoint_dir / "seasonal-skip.json").read_text())
    assert saved["label"] == "1D back"  # 48 h of context: a week does not fit
    energy = json.loads((run.path / "energy.json").read_text())
    rows = energy.get("rows") or energy.get("windows")
    noted = [r["extra"]["epsilon"] for r in rows if r["window"].startswith("train/epoch-")]
    assert noted == pytest.approx([e["epsilon"] for e in privacy["epochs"]])
    green = run.metrics.energy
    assert green is not None and green.greenest not in privacy["non_private_reference"]


# slow: a CLI run paused and resumed (80 s); tests/unit/privacy/test_dp.py resumes the
# accountant in CI
@pytest.mark.slow
def test_a_paused_private_run_resumes_without_resetting_epsilon(csv, tmp_path):
    # the budget is the network's: baselines, ensembles and the report (most of three whole
    # runs' time) add nothing to what this checks
    dp = [*DP, "eval.baselines=[]", "eval.ensembles=[]", "eval.report=false"]
    whole = cli("run", *series_overrides(csv, tmp_path, "whole"), *dp)
    assert whole.returncode == 0, whole.stderr
    paused = cli("run", *series_overrides(csv, tmp_path, "cut"), *dp, fault="term@train/epoch-2")
    assert paused.returncode == 143, paused.stdout + paused.stderr
    resumed = cli("run", "--resume", str(tmp_path / "cut"))
    assert resumed.returncode == 0, resumed.stderr
    assert "privacy: resumed at step" in (tmp_path / "cut" / "log.txt").read_text()
    a = RunDir.open(tmp_path / "whole").metrics.privacy
    b = RunDir.open(tmp_path / "cut").metrics.privacy
    assert a is not None and b is not None
    assert b["steps"] == a["steps"] and b["epsilon"] == pytest.approx(a["epsilon"])
    assert [e["epsilon"] for e in b["epochs"]] == pytest.approx([e["epsilon"] for e in a["epochs"]])


def test_private_runs_refuse_what_they_cannot_protect(csv, tmp_path):
    no_bounds = invoke("run", *series_overrides(csv, tmp_path, "a"), "privacy.dp.target_epsilon=8")
    assert no_bounds.exit_code == 2
    assert "data.scaler=bounds needs a public range for load_mw, temp_c" in no_bounds.output
    ia3 = invoke("run", *series_overrides(csv, tmp_path, "b"), *DP, "peft.method=ia3")
    assert ia3.exit_code == 2 and "cannot train peft.method=ia3" in ia3.output
    delta = invoke("run", *series_overrides(csv, tmp_path, "c"), *DP, "privacy.dp.delta=0.1")
    assert delta.exit_code == 2 and "is not below 1/n" in delta.output


def test_a_private_classifier_and_its_audit(tmp_path):
    run = tiny_classify_run(tmp_path, 160, 0, "privacy.dp.target_epsilon=4", "train.epochs=2")
    privacy = run.metrics.privacy
    assert privacy is not None and privacy["unit"] == "text" and privacy["epsilon"] <= 4
    assert privacy["non_private_reference"] == [
        n for n in run.metrics.test if n != run.metrics.model
    ]
    result = invoke("privacy", "audit", str(run.path), "--samples", "40")
    assert result.exit_code == 0, result.output
    assert "membership inference" in result.output and "AUC" in result.output
    saved = json.loads((run.path / "privacy-audit.json").read_text())
    assert saved["members"] == saved["non_members"] == 32  # the 32 test texts of 160
    assert saved["epsilon"] == pytest.approx(privacy["epsilon"])
    assert 0 <= saved["auc"] <= 1
    bad = invoke("privacy", "audit", str(run.path), "--samples", "5")
    assert bad.exit_code == 2 and "--samples must be >= 10" in bad.output
    missing = invoke("privacy", "audit", str(tmp_path / "nope"))
    assert missing.exit_code == 2


def test_a_variant_keeps_the_guarantee_only_when_it_did_not_train(tmp_path):
    run = tiny_classify_run(tmp_path, 120, 0, "privacy.dp.target_epsilon=4")
    eps = run.metrics.privacy["epsilon"]
    args = ["compress", str(run.path), "-m", "int8-dynamic", "-m", "distill", "--rounds", "1"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    quantized = RunDir.open(run.path.parent / "c-int8-dynamic").metrics.privacy
    assert quantized is not None and quantized["epsilon"] == pytest.approx(eps)
    distilled = RunDir.open(run.path.parent / "c-distill").metrics.privacy
    assert distilled is not None and distilled["epsilon"] is None
    assert "distill trained on the training data without DP" in distilled["not_private"]
    shown = invoke("evaluate", str(run.path.parent / "c-distill"))
    assert "privacy: not private: distill trained" in shown.output
