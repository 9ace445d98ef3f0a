"""Energy end to end: the ledger of a real tiny run, later commands appending, energy measure."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from greentune.cli import (
    app,
    commands,  # noqa: F401  (registers the commands)
    quiet_libraries,
)
from tests.conftest import make_series, series_overrides

runner = CliRunner()
quiet_libraries()
BASELINES = "eval.baselines=[seasonal_naive_weekly,linear,random_init]"


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def metered_run(tmp_path_factory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("energy")
    csv = tmp / "load.csv"
    make_series().to_csv(csv, index=False)
    result = invoke(
        "run",
        *series_overrides(csv, tmp / "runs"),
        "train.epochs=2",
        BASELINES,
        "energy.carbon=fixed:400",
        "energy.pue=1.2",
        "eval.metric=mase",  # rows ranked by MASE, not the default MAPE: the choice is wired
    )
    assert result.exit_code == 0, result.output
    return tmp / "runs" / "r", result.output


def test_every_phase_of_a_run_is_in_the_ledger(metered_run):
    run, _ = metered_run
    ledger = json.loads((run / "energy.json").read_text())
    windows = [r["window"] for r in ledger["rows"]]
    for name in (
        "data",
        "train",
        "train/ridge-skip",
        "train/validate-init",
        "train/epoch-0",
        "train/validate-0",
        "train/epoch-1",
        "train/validate-1",
        "test",
        "save",
        "baseline/seasonal_naive_weekly",
        "baseline/linear",
        "baseline/random_init",
        "baseline/random_init/epoch-0",
    ):
        assert name in windows, name
    for row in ledger["rows"]:
        assert row["command"] == "run" and row["rank"] == 0
        assert row["kind"] == "model" and row["sources"] == {"cpu": "model", "dram": "model"}
        assert row["intensity_g_per_kwh"] == 400.0 and row["pue"] == 1.2
        assert row["emissions_g"] == pytest.approx(
            sum(row["energy_j"].values()) / 3.6e6 * 400.0 * 1.2
        )
    top = [r for r in ledger["rows"] if r["depth"] == 0]
    assert ledger["totals"]["all"]["energy_j"] == pytest.approx(
        sum(sum(r["energy_j"].values()) for r in top)
    )
    train = next(r for r in top if r["window"] == "train")
    nested = [r for r in ledger["rows"] if r["parent"] == "train"]
    assert sum(sum(r["energy_j"].values()) for r in nested) <= sum(train["energy_j"].values())
    assert train["energy_j"]["cpu"] > 0
    session = ledger["sessions"][0]
    assert session["carbon"].startswith("fixed: 400")
    assert session["sources"]["model"]["cpu_rule"]
    csv = pd.read_csv(run / "energy.csv")
    assert len(csv) == len(ledger["rows"]) and "energy_cpu_j" in csv.columns


def test_results_carry_energy_and_the_table_shows_it(metered_run):
    run, output = metered_run
    metrics = json.loads((run / "metrics.json").read_text())
    # the run's own rows (evaluate and predict append theirs to the same ledger)
    rows = [
        r for r in json.loads((run / "energy.json").read_text())["rows"] if r["command"] == "run"
    ]

    def joules(window: str) -> float:
        return sum(sum(r["energy_j"].values()) for r in rows if r["window"] == window)

    g_per_wh = 400.0 * 1.2 / 1000  # energy.carbon=fixed:400 g/kWh, energy.pue=1.2
    test = metrics["test"]
    assert set(test) == {
        metrics["model"],
        "seasonal_naive_weekly",
        "linear",
        "random_init",
        "ensemble-mean",  # eval.ensembles: the default mean and weighted combinations
        "ensemble-weighted",
    }
    for name, row in test.items():  # each bill from the ledger windows the row names
        shares = row["energy_windows"]
        fit_wh = sum(share * joules(w) for w, share in shares["fit"].items()) / 3600
        predict_wh = sum(share * joules(w) for w, share in shares["predict"].items()) / 3600
        assert row["fit_wh"] == pytest.approx(fit_wh), name
        assert row["predict_wh"] == pytest.approx(predict_wh), name
        assert row["energy_wh"] == pytest.approx(fit_wh + predict_wh), name
        assert row["energy_kind"] == "model", name  # no counters on CI machines
        assert row["emissions_g"] == pytest.approx((fit_wh + predict_wh) * g_per_wh), name
        assert row["wh_per_1k_predictions"] == pytest.approx(1000 * predict_wh / row["predictions"])
        ref = test["seasonal_naive_weekly"]["mase"]  # skill per kWh against the weekly naive
        assert row["skill_per_kwh"] == pytest.approx(
            (1 - row["mase"] / ref) / (row["energy_wh"] / 1000)
        )
    ours = test[metrics["model"]]
    assert ours["energy_windows"] == {"fit": {"train": 1.0}, "predict": {"test": 1.0}}
    assert ours["fit_wh"] > test["seasonal_naive_weekly"]["fit_wh"]
    # the greenest: least emissions among the models within 2 % of the best validation MASE
    energy = metrics["energy"]
    val = {name: metrics["validation"][name]["mase"] for name in test}
    best = min(val, key=val.__getitem__)
    within = [n for n in test if val[n] <= val[best] * 1.02]
    greenest = min(within, key=lambda n: test[n]["emissions_g"])
    assert (energy["target"], energy["quality_metric"], energy["chosen_on"]) == (
        0.02,
        "mase",
        "validation",
    )
    assert (energy["best"], energy["greenest"]) == (best, greenest)
    assert energy["energy_ratio_to_best"] == pytest.approx(
        test[greenest]["energy_wh"] / test[best]["energy_wh"]
    )
    top = [r for r in rows if r["depth"] == 0]
    assert energy["run_wh"] == pytest.approx(sum(sum(r["energy_j"].values()) for r in top) / 3600)
    assert energy["run_g"] == pytest.approx(energy["run_wh"] * g_per_wh)
    assert "Wh (model)" in output and "gCO2e (model)" in output
    # the ridge the network starts from is named, and the network compared with it first
    said = " ".join(output.split())
    assert "than linear (its starting point: what fine-tuning changed)" in said
    assert f"{metrics['model']} MASE is " in said
    assert "greenest within 2 % of the best mase" in output
    table = [line.split("│")[1].split()[0] for line in output.splitlines() if line[:1] == "│"]
    # rows in MASE's order (here also MAPE's: test_metrics tells the two orders apart)
    assert table == sorted(test, key=lambda n: test[n]["mase"])


def test_evaluate_and_predict_append_their_rows(metered_run, tmp_path):
    run, _ = metered_run
    before = len(json.loads((run / "energy.json").read_text())["rows"])
    result = invoke("evaluate", str(run))
    assert result.exit_code == 0, result.output
    assert "this evaluation: energy (model):" in result.output
    path = tmp_path / "new.csv"
    make_series(days=5, seed=7).to_csv(path, index=False)
    result = invoke(
        "predict", str(run), "--data", str(path), "--out", str(tmp_path / "f.csv"),
        "--origins", "daily",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Wh per 1,000 predictions" in result.output
    rows = json.loads((run / "energy.json").read_text())["rows"]
    assert [r["window"] for r in rows[before:]] == ["evaluate", "predict"]
    assert [r["command"] for r in rows[before:]] == ["evaluate", "predict"]


def test_metering_can_be_switched_off(tmp_path, tiny_csv):
    result = invoke(
        "run",
        *series_overrides(tiny_csv, tmp_path / "runs"),
        "train.max_steps=2",
        "eval.baselines=[seasonal_naive_weekly]",
        "energy.enabled=false",
    )
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "runs" / "r" / "energy.json").exists()
    assert "energy_wh" not in json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())


def test_energy_measure_meters_a_command_and_keeps_its_exit_code(tmp_path):
    out = tmp_path / "m.json"
    code = "import sys; sum(i * i for i in range(2_000_000)); sys.exit(3)"
    result = invoke(
        "energy", "measure", "--carbon", "fixed:100", "--json", str(out),
        "--ledger", str(tmp_path / "ledger"), "--", sys.executable, "-c", code,
    )  # fmt: skip
    assert result.exit_code == 3
    row = json.loads(out.read_text())
    assert row["window"] == "measure" and row["command"] == "measure"
    assert row["energy_j"]["cpu"] > 0.01  # the child's CPU time, counted after it was waited for
    assert row["extra"]["returncode"] == 3 and row["extra"]["argv"][-1] == code
    assert row["emissions_g"] == pytest.approx(sum(row["energy_j"].values()) / 3.6e6 * 100)
    ledger = json.loads((tmp_path / "ledger" / "energy.json").read_text())
    assert [r["window"] for r in ledger["rows"]] == ["measure"]
    assert ledger["rows"][0]["extra"] == {"argv": row["extra"]["argv"], "returncode": 3}


def test_energy_errors_are_clear(tmp_path):
    result = invoke("energy", "measure", "--", "no-such-command-xyz")
    assert result.exit_code == 2 and "command not found: no-such-command-xyz" in result.output
    result = invoke("energy", "measure", "--meter", "rapl", "--", "true")
    assert result.exit_code == 2 and "/sys/class/powercap" in result.output
    result = invoke("energy", "measure", "--carbon", "nowhere:1", "--", "true")
    assert result.exit_code == 2 and "unknown carbon provider 'nowhere'" in result.output
    trace = tmp_path / "t.csv"
    trace.write_text("timestamp,intensity\n2021-01-01T00:00:00Z,100\n2021-01-01T01:00:00Z,120\n")
    result = invoke("energy", "measure", "--carbon", f"trace:{trace}", "--", "true")
    assert result.exit_code == 2 and "does not cover the window" in result.output
    result = invoke("energy", "measure", "--carbon", f"trace:{trace}|static:DE", "--", "true")
    assert result.exit_code == 0, result.output
