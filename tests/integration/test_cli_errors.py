"""Bad input: one clear red line naming the file/column/row/key, exit code 2, no traceback."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from greentune.cli import (
    app,
    commands,  # noqa: F401
)

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def check(args, message, tmp_path=None):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert message in " ".join(result.output.split()), result.output


def write(tmp_path, frame, name="bad.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.drop(index=[30, 31]), "1 gap(s) in the time index (2 missing steps"),
        (lambda f: f.assign(ts=f.ts.where(f.index != 3)), "missing timestamp(s), first at row 4"),
        (lambda f: pd.concat([f.iloc[:10], f.iloc[9:10], f.iloc[10:]]), "1 duplicate timestamp(s)"),
        (lambda f: f.iloc[::-1], "is not sorted"),
        (
            lambda f: f.astype({"temp_c": object}).assign(
                temp_c=lambda g: g.temp_c.where(g.index != 8, "warm")
            ),
            "column 'temp_c' is not numeric: row 9 holds 'warm'",
        ),
        (
            lambda f: f.iloc[:100],
            "too little data for windows of 168 context + 24 horizon steps: 100 rows of 0 days "
            "01:00:00 with val 0.15 and test 0.15; that needs at least 275 rows",
        ),
    ],
    ids=["gap", "missing-ts", "duplicate", "unsorted", "non-numeric", "too-little"],
)
def test_data_check_errors(tmp_path, tiny_series, mutate, message):
    path = write(tmp_path, mutate(tiny_series).reset_index(drop=True))
    check(
        [
            "data",
            "check",
            path,
            "--time-col",
            "ts",
            "--target",
            "load_mw",
            "--covariates",
            "temp_c",
        ],
        message,
    )


def test_data_check_unknown_column(tmp_path, tiny_csv):
    check(
        ["data", "check", str(tiny_csv), "--time-col", "ts", "--target", "load"],
        "column(s) 'load' named in the config not found; columns are: ts, load_mw, temp_c",
    )


def test_data_check_ok_and_fill_gaps(tmp_path, tiny_series):
    path = write(tmp_path, tiny_series.drop(index=[30, 31]).reset_index(drop=True))
    result = run(
        "data",
        "check",
        path,
        "--time-col",
        "ts",
        "--target",
        "load_mw",
        "--fill-gaps",
        "data.context_length=48",
        "data.horizon=24",
        "data.val=5D",
        "data.test=5D",
    )
    assert result.exit_code == 0, result.output
    assert "filled 2 missing steps in 1 gap(s)" in result.output


def test_missing_file(tmp_path):
    check(
        ["data", "check", str(tmp_path / "nope.csv"), "--time-col", "ts", "--target", "y"],
        "nope.csv: file not found",
    )


def test_bad_config_key_and_value(tmp_path):
    check(["config", "show", "train.lrr=1"], "unknown key train.lrr; valid keys:")
    check(
        ["run", "peft.method=qlora", f"output_dir={tmp_path}"],
        "peft.method='qlora' is not valid; valid choices",
    )
    check(["config", "show", str(tmp_path / "missing.yaml")], "missing.yaml does not exist")


def test_a_forecaster_refuses_to_select_on_accuracy(tmp_path):
    check(
        ["run", "train.select_on=accuracy", f"output_dir={tmp_path}/runs", "name=f"],
        "train.select_on=accuracy is not a validation score of task=forecast, which chooses its "
        "kept model on loss or mape: set train.select_on=loss",
    )
    assert not (tmp_path / "runs" / "f" / "metrics.json").exists()


def test_run_with_bad_data_marks_the_run_failed(tmp_path, tiny_series):
    path = write(tmp_path, tiny_series.iloc[::-1])
    check(
        [
            "run",
            "--data",
            path,
            "--time-col",
            "ts",
            "--target",
            "load_mw",
            f"output_dir={tmp_path}/runs",
            "name=bad",
        ],
        "is not sorted",
    )
    assert '"status": "failed"' in (tmp_path / "runs" / "bad" / "run.json").read_text()


def test_existing_run_is_not_overwritten(tmp_path):
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "metrics.json").write_text("{}")
    check(["run", f"output_dir={tmp_path}/runs", "name=x"], "already exists")
    assert (tmp_path / "runs" / "x" / "metrics.json").read_text() == "{}"


def test_evaluate_a_non_run(tmp_path):
    check(["evaluate", str(tmp_path)], "is not a run directory (no config.yaml)")


def test_config_show_writes_every_default():
    result = run("config", "show", "configs/forecast/vic_lora.yaml", "train.lr=3e-4")
    assert result.exit_code == 0
    assert "lr: 0.0003" in result.output and "schema_version: 1" in result.output
    assert "checkpoint_every: 200" in result.output


def test_data_check_warns_of_near_zero_values_in_test(tmp_path, tiny_series):
    series = tiny_series.copy()
    series.loc[len(series) - 1, "load_mw"] = 0.01 * series["load_mw"].median()
    path = write(tmp_path, series)
    args = ["data.context_length=48", "data.horizon=24", "data.val=5D", "data.test=5D"]
    result = run("data", "check", path, "--time-col", "ts", "--target", "load_mw", *args)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "bad.csv: OK, with 1 warning(s)" in flat
    assert "test: 1 scored value(s) of load_mw" in flat


def test_log_lines_print_brackets_as_written():
    from greentune.cli.app import console, say

    with console.capture() as captured:
        say("data: columns [bold]load[/bold], eval.baselines=[]")
    assert captured.get() == "data: columns [bold]load[/bold], eval.baselines=[]\n"
