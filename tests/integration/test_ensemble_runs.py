"""``greentune ensemble``: models of several finished runs combined, weights fitted on their
validation forecasts, the result a run directory with every row scored and billed."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import greentune as gt
from greentune.cli import app, commands  # noqa: F401  (registers the commands)
from greentune.errors import CheckpointError, ConfigError
from greentune.rundir import RunDir
from greentune.tasks.forecast.ensemble_runs import ensemble_runs
from tests.conftest import make_series, series_overrides

runner = CliRunner()


def _run(tmp: Path, name: str, *extra: str) -> RunDir:
    csv = tmp / "load.csv"
    if not csv.exists():
        make_series().to_csv(csv, index=False)
    cfg = gt.build_config(
        overrides=[
            *series_overrides(csv, tmp / "runs", name),
            "train.epochs=1",
            "eval.baselines=[linear,lightgbm]",
            *extra,
        ]
    )
    return gt.run(cfg, echo=lambda m: None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, RunDir, Path]:
    tmp = tmp_path_factory.mktemp("ens")
    return _run(tmp, "a", "seed=0"), _run(tmp, "b", "seed=1", "train.lr=0.003"), tmp


def test_runs_keep_every_rows_validation_forecasts(runs) -> None:
    a, _, _ = runs
    val = a.validation_predictions
    m = a.metrics
    assert set(val.model) == set(m.test) == set(m.validation or {})
    per_model = val.groupby("model").size()
    assert (per_model == m.data["windows"]["val"] * 24).all()  # 24 steps, one target


def test_two_runs_make_a_run_directory_with_ensembles_chosen_on_validation(runs) -> None:
    a, b, tmp = runs
    out = ensemble_runs([str(a.path), str(b.path), f"{a.path}:lightgbm"], tmp / "runs" / "ens")
    m = out.metrics
    members = ["a/" + a.metrics.model, "b/" + b.metrics.model, "a/lightgbm"]
    kinds = ["ensemble-weighted", "ensemble-mean", "ensemble-median"]
    assert list(m.test) == [*members, *kinds]
    # a member keeps its scores: re-scored here from its saved forecasts, the same numbers
    for row, run in (("a/lightgbm", a), (members[1], b)):
        own = run.metrics.test[row.split("/", 1)[1]].scores
        assert m.test[row].scores["mape"] == pytest.approx(own["mape"], rel=1e-9)
    preds = out.predictions
    point = {n: preds[preds.model == n].y_pred.to_numpy() for n in [*members, *kinds]}
    np.testing.assert_allclose(point["ensemble-mean"], np.mean([point[n] for n in members], 0))
    np.testing.assert_allclose(point["ensemble-median"], np.median([point[n] for n in members], 0))
    weights = np.asarray(m.ensembles["ensemble-weighted"]["weights_by_step"])
    assert weights.shape == (24, 3) and np.allclose(weights.sum(1), 1.0, atol=1e-3)
    assert (weights >= 0).all()
    # billed: the members' bills (from their runs) plus this command's own windows
    own_wh = m.energy.by_phase_wh["ensemble"]
    members_wh = sum(m.test[n].bill.energy_wh for n in members)
    assert own_wh > 0 and m.energy.by_phase_wh["members"] == pytest.approx(members_wh)
    for k in kinds:
        assert m.test[k].bill.energy_wh == pytest.approx(members_wh + own_wh)
    assert m.energy.chosen_on == "validation" and m.energy.greenest in m.test
    assert set(m.validation) == set(m.test)
    assert out.info.status == "complete"
    assert set(out.validation_predictions.model) == set(m.test)
    # it has no model of its own: loading it says so and names the members
    with pytest.raises(CheckpointError, match=r"ensemble of runs .* its members: .*runs/a"):
        gt.Predictor.from_run(out)


def test_rows_of_one_run_pay_their_shared_work_once(runs) -> None:
    """The network and `linear` of one run share the ridge fit (`train/ridge-skip`): the
    ensemble pays it once, as the run's own ensemble row does."""
    from greentune.evaluate.ensemble import member_windows
    from greentune.evaluate.green import bill_windows

    a, _, tmp = runs
    out = ensemble_runs([str(a.path), f"{a.path}:linear"], tmp / "runs" / "shared", ("mean",))
    m = out.metrics
    net, lin = a.metrics.test[a.metrics.model], a.metrics.test["linear"]
    assert "train/ridge-skip" in lin.energy_windows["fit"]  # the shared window
    merged = member_windows([net.energy_windows, lin.energy_windows], "")
    merged["fit"].pop("")
    once = bill_windows(a.ledger, merged).energy_wh
    assert m.energy.by_phase_wh["members"] == pytest.approx(once)
    assert once < net.bill.energy_wh + lin.bill.energy_wh
    own = m.energy.by_phase_wh["ensemble"]
    assert m.test["ensemble-mean"].bill.energy_wh == pytest.approx(once + own)


def test_members_must_forecast_the_same_windows(runs) -> None:
    a, _, tmp = runs
    other = _run(tmp, "h12", "data.horizon=12")
    with pytest.raises(ConfigError, match=r"h12 forecast other data than .*data\.horizon is 12"):
        ensemble_runs([str(a.path), str(other.path)], tmp / "runs" / "bad")
    assert not (tmp / "runs" / "bad" / "metrics.json").exists()


def test_bad_members_are_refused_with_what_to_do(runs) -> None:
    a, _, tmp = runs
    with pytest.raises(ConfigError, match="at least two members"):
        ensemble_runs([str(a.path)], tmp / "runs" / "one")
    with pytest.raises(ConfigError, match=r"no row 'nope'; its rows: .*lightgbm"):
        ensemble_runs([str(a.path), f"{a.path}:nope"], tmp / "runs" / "nope")
    with pytest.raises(ConfigError, match="given twice"):
        ensemble_runs([str(a.path), str(a.path)], tmp / "runs" / "twice")
    with pytest.raises(CheckpointError, match="not a run directory"):
        ensemble_runs([str(a.path), str(tmp)], tmp / "runs" / "notrun")


def test_a_run_without_validation_forecasts_says_to_run_it_again(runs, tmp_path) -> None:
    a, b, _ = runs
    import shutil

    old = tmp_path / "old"
    shutil.copytree(b.path, old)
    (old / "validation.parquet").unlink()
    with pytest.raises(CheckpointError, match="no validation.parquet.*run it again"):
        ensemble_runs([str(a.path), str(old)], tmp_path / "ens")
    assert not (tmp_path / "ens").exists()  # refused before anything was written


def test_the_command_prints_the_table_and_refuses_bad_input_with_exit_2(runs) -> None:
    a, b, tmp = runs
    out = tmp / "runs" / "cli"
    ok = runner.invoke(
        app, ["ensemble", str(a.path), str(b.path), "--out", str(out), "--kinds", "mean"]
    )
    assert ok.exit_code == 0, ok.output
    assert "ensemble-mean" in ok.output and "recommended" in ok.output
    bad = runner.invoke(
        app, ["ensemble", str(a.path), str(b.path), "--out", str(tmp / "k"), "--kinds", "avg"]
    )
    assert bad.exit_code == 2 and "--kinds: avg; valid choices" in " ".join(bad.output.split())
    assert "Traceback" not in bad.output
    frame = pd.read_parquet(out / "predictions.parquet")
    assert set(frame.model) == {"a/" + a.metrics.model, "b/" + b.metrics.model, "ensemble-mean"}
