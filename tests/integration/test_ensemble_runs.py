"""``greentune ensemble``: models of several finished runs combined, weights fitted on their
validation forecasts, the result a run directory with every row scored and billed."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import greentune as gt
from greentune.cli import app, commands, compress  # noqa: F401  (registers the commands)
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
    # it has no model of its own to compress: that names the members
    result = runner.invoke(app, ["compress", str(out.path), "--method", "int8-dynamic"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and re.search(r"ensemble of runs .* compress its members", said)


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
    # scored, not kept (as random_init, or a LightGBM design): it could never forecast
    unkept = tmp / "runs" / "a-unkept"
    shutil.copytree(a.path, unkept)
    rows = json.loads((unkept / "rows" / "rows.json").read_text())
    del rows["rows"]["linear"]
    rows["ensembles"] = {}
    (unkept / "rows" / "rows.json").write_text(json.dumps(rows))
    with pytest.raises(ConfigError, match=r"row 'linear' is scored but not kept .* give one of"):
        ensemble_runs([str(a.path), f"{unkept}:linear"], tmp / "runs" / "unkept")
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
    said = "".join(ok.output.split())  # rich may fold a long path anywhere
    assert f"serveit:greentuneserve{out}--rowrecommended" in said
    bad = runner.invoke(
        app, ["ensemble", str(a.path), str(b.path), "--out", str(tmp / "k"), "--kinds", "avg"]
    )
    assert bad.exit_code == 2 and "--kinds: avg; valid choices" in " ".join(bad.output.split())
    assert "Traceback" not in bad.output
    frame = pd.read_parquet(out / "predictions.parquet")
    assert set(frame.model) == {"a/" + a.metrics.model, "b/" + b.metrics.model, "ensemble-mean"}


def _saved_rows(run: RunDir, name: str) -> pd.DataFrame:
    saved = run.predictions
    return saved[saved.model == name].reset_index(drop=True)


@pytest.fixture(scope="module")
def ens(runs) -> RunDir:
    a, b, tmp = runs
    return ensemble_runs([str(a.path), str(b.path), f"{a.path}:lightgbm"], tmp / "runs" / "served")


def test_an_ensemble_of_runs_forecasts_as_it_scored_its_test_windows(runs, ens) -> None:
    """Loaded once through its members (two networks and a kept LightGBM), every ensemble row
    reproduces the ensemble's saved test forecasts: the weights are kept unrounded."""
    a, _, _ = runs
    m = ens.metrics
    kept = json.loads((ens.path / "ensemble.json").read_text())
    weights = np.asarray(kept["rows"]["ensemble-weighted"]["weights"])
    np.testing.assert_allclose(
        np.round(weights, 4), m.ensembles["ensemble-weighted"]["weights_by_step"]
    )
    assert [k["name"] for k in kept["members"]] == list(m.test)[:3]
    path = a.config.data.path
    predictor = gt.Predictor.from_run(ens.path)
    assert predictor.info["row"] == m.model == "ensemble-weighted"
    for name in ["ensemble-weighted", "ensemble-mean", "ensemble-median", "a/lightgbm"]:
        expected = _saved_rows(ens, name)
        got = predictor.with_row(name).predict_file(path, origins="daily")
        got = got[got["origin"].isin(expected["origin"])].reset_index(drop=True)
        assert len(got) == len(expected) > 0, name
        for got_col, col in [("load_mw_forecast", "y_pred")] + [
            (f"load_mw_q{q}", f"q{q}") for q in ("0.1", "0.5", "0.9")
        ]:
            # the networks' float32 forward pass differs in the last bits with its batch
            np.testing.assert_allclose(got[got_col], expected[col], rtol=1e-6, err_msg=name)
    from greentune.tasks.forecast import ForecastPredictor

    with pytest.raises(CheckpointError, match=r"RunsPredictor .*load it with Predictor.from_run"):
        ForecastPredictor.from_run(ens.path)
    recommended = predictor.with_row("recommended")
    assert recommended.info["row"] == m.energy.greenest
    # one forecast from the end of the history, as a service answers it
    frame = pd.read_csv(path).iloc[:-24]
    history = frame.assign(temp_c=pd.read_csv(path)["temp_c"].iloc[:-24])
    future = pd.read_csv(path).iloc[-24:].assign(load_mw=np.nan)
    one = predictor.predict(pd.concat([history, future], ignore_index=True))
    assert len(one) == 24 and one["load_mw_forecast"].notna().all()


def test_an_ensemble_of_runs_moves_with_its_members_and_refuses_what_it_cannot_serve(
    runs, ens, tmp_path: Path
) -> None:
    import shutil

    a, b, _ = runs
    # the runs' folder moved whole: the members are found beside the ensemble
    moved = tmp_path / "moved"
    for run in (a, b, ens):
        shutil.copytree(run.path, moved / run.path.name)
    loaded = gt.Predictor.from_run(moved / "served")
    assert {p.run.path.parent for p in loaded.members.values()} == {moved}
    with pytest.raises(
        ConfigError, match=r"no row 'nope' to predict with; it has ensemble-weighted"
    ):
        loaded.with_row("nope")
    # a changed copy beside the moved ensemble: the member at its recorded absolute path is used
    metrics = json.loads((moved / "b" / "metrics.json").read_text())
    row = metrics["model"]
    metrics["test"][row]["mape"] = metrics["test"][row]["mape"] + 1.0
    (moved / "b" / "metrics.json").write_text(json.dumps(metrics))
    again = gt.Predictor.from_run(moved / "served")
    assert again.members[f"b/{row}"].run.path == b.path.resolve()
    # a member changed since (made again with other results): its weights no longer fit
    copy = tmp_path / "b-copy"
    shutil.copytree(b.path, copy)
    made = ensemble_runs([str(a.path), str(copy)], tmp_path / "lonely", ("mean",))
    shutil.copy(moved / "b" / "metrics.json", copy / "metrics.json")
    with pytest.raises(CheckpointError, match=r"member b-copy/.* changed since the ensemble"):
        gt.Predictor.from_run(made.path)
    # a member gone from both places
    shutil.rmtree(copy)
    with pytest.raises(CheckpointError, match=r"member b-copy/.* is gone .*put its run back"):
        gt.Predictor.from_run(made.path)
    # made before greentune kept ensemble.json
    old = tmp_path / "old"
    shutil.copytree(ens.path, old)
    (old / "ensemble.json").unlink()
    with pytest.raises(CheckpointError, match=r"made before greentune kept .*make it again"):
        gt.Predictor.from_run(old)
    # scored when it was made: evaluate says so, with exit code 2, before metering anything
    rows_before = len(ens.ledger.rows)
    result = runner.invoke(app, ["evaluate", str(ens.path)])
    assert result.exit_code == 2 and "scored when it was made" in " ".join(result.output.split())
    assert len(RunDir(ens.path).ledger.rows) == rows_before
    # moved whole (the recorded absolute paths gone) and opened through a link elsewhere: the
    # members are found beside the ensemble's real folder, not beside the link
    shutil.copytree(a.path, tmp_path / "x" / "a")
    shutil.copytree(b.path, tmp_path / "x" / "b")
    ensemble_runs(
        [str(tmp_path / "x" / "a"), str(tmp_path / "x" / "b")], tmp_path / "x" / "e", ("mean",)
    )
    (tmp_path / "x").rename(tmp_path / "y")
    link = tmp_path / "elsewhere" / "link"
    link.parent.mkdir()
    link.symlink_to(tmp_path / "y" / "e")
    through = gt.Predictor.from_run(link)
    assert {p.run.path for p in through.members.values()} == {
        (tmp_path / "y" / n).resolve() for n in ("a", "b")
    }
    # a damaged ensemble.json is named, with what to do
    for change in (
        lambda d: d.update(members=d["members"][:1]),
        lambda d: d["rows"]["ensemble-weighted"].update(weights=[[0.5, 0.5]]),
        lambda d: d["rows"]["ensemble-weighted"].pop("weights"),
    ):
        bad = tmp_path / f"bad{len(list(tmp_path.glob('bad*')))}"
        shutil.copytree(ens.path, bad)
        kept = json.loads((bad / "ensemble.json").read_text())
        change(kept)
        (bad / "ensemble.json").write_text(json.dumps(kept))
        with pytest.raises(CheckpointError, match=r"ensemble.json is damaged .*make the ensemble"):
            gt.Predictor.from_run(bad)


def test_predict_and_serve_take_an_ensemble_of_runs(runs, ens, tmp_path: Path) -> None:
    from greentune.serve.engine import load
    from greentune.serve.server import check_startable
    from greentune.serve.settings import ServeSettings

    a, _, _ = runs
    out = tmp_path / "fc.csv"

    def predict(*extra: str):
        args = ["predict", str(ens.path), "--data", str(a.config.data.path), "--out", str(out)]
        return runner.invoke(app, [*args, *extra])

    ok = predict("--origins", "daily", "--row", "ensemble-mean")
    assert ok.exit_code == 0, ok.output
    assert "row ensemble-mean" in ok.output
    expected = _saved_rows(ens, "ensemble-mean")
    got = pd.read_csv(out)
    got = got[pd.to_datetime(got["origin"]).isin(expected["origin"])]
    np.testing.assert_allclose(got["load_mw_forecast"], expected["y_pred"], rtol=1e-6)
    bad = predict("--row", "nope")
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    loaded = load(ens.path, None, "recommended")
    assert loaded.row == ens.metrics.energy.greenest and loaded.row_spec == "recommended"
    assert loaded.version == load(ens.path, None, "recommended").version  # stable
    assert loaded.version != load(ens.path, None, "ensemble-median").version
    assert loaded.describe()["test_metrics"]["mape"] == pytest.approx(
        ens.metrics.test[loaded.row].scores["mape"]
    )
    check_startable(ServeSettings(run=str(ens.path), row="ensemble-mean", auth=False))
    check_startable(ServeSettings(run=str(ens.path), variant="original", auth=False))
    with pytest.raises(ConfigError, match="no row 'nope'"):
        check_startable(ServeSettings(run=str(ens.path), row="nope", auth=False))


def test_an_ensemble_with_an_ensemble_as_a_member_loads_through_both(runs, ens, tmp_path) -> None:
    a, _, _ = runs
    nested = ensemble_runs(
        [f"{ens.path}:ensemble-mean", f"{a.path}:linear"], tmp_path / "nested", ("mean",)
    )
    expected = _saved_rows(nested, "ensemble-mean")
    got = gt.Predictor.from_run(nested.path).predict_file(a.config.data.path, origins="daily")
    got = got[got["origin"].isin(expected["origin"])].reset_index(drop=True)
    assert len(got) == len(expected) > 0
    np.testing.assert_allclose(got["load_mw_forecast"], expected["y_pred"], rtol=1e-6)
    from greentune.serve.server import check_startable
    from greentune.serve.settings import ServeSettings

    check_startable(ServeSettings(run=str(nested.path), auth=False))


def test_refusals_before_loading_a_model(runs, ens, tmp_path: Path) -> None:
    """What serve's start check and the loader refuse, each with what to do; the start check
    imports no torch."""
    import shutil
    import subprocess
    import sys

    from greentune.serve.server import check_startable
    from greentune.serve.settings import ServeSettings

    def start(run: Path, **kw: str) -> None:
        check_startable(ServeSettings(run=str(run), auth=False, **kw))

    with pytest.raises(ConfigError, match="ensemble of runs, which is not compressed itself"):
        start(ens.path, variant="int8-dynamic")
    with pytest.raises(ConfigError, match="not compressed itself"):
        gt.Predictor.from_run(ens.path, variant="int8-dynamic")
    assert gt.Predictor.from_run(ens.path, row="model").info["row"] == ens.metrics.model
    a, b, _ = runs
    shutil.copytree(b.path, tmp_path / "b2")
    made = ensemble_runs([str(a.path), str(tmp_path / "b2")], tmp_path / "e2", ("mean",))
    shutil.rmtree(tmp_path / "b2")
    with pytest.raises(CheckpointError, match=r"member b2/.* is gone"):
        start(made.path)
    # a file from another greentune, or not JSON, or weights for another horizon
    for text, match in (
        ('{"format": 9}', r"format 9, this greentune reads 1; update greentune"),
        ("{not json", r"is damaged \(not JSON"),
    ):
        bad = tmp_path / f"bad-{len(list(tmp_path.glob('bad-*')))}"
        shutil.copytree(ens.path, bad)
        (bad / "ensemble.json").write_text(text)
        with pytest.raises(CheckpointError, match=match):
            start(bad)
    short = tmp_path / "short"
    shutil.copytree(ens.path, short)
    kept = json.loads((short / "ensemble.json").read_text())
    kept["rows"]["ensemble-weighted"]["weights"] = kept["rows"]["ensemble-weighted"]["weights"][1:]
    (short / "ensemble.json").write_text(json.dumps(kept))
    with pytest.raises(CheckpointError, match="weights are for 23 horizon steps .* forecast 24"):
        gt.Predictor.from_run(short).predict_file(a.config.data.path, origins="daily")
    code = (
        "import sys; from greentune.serve.server import check_startable; "
        "from greentune.serve.settings import ServeSettings; "
        f"check_startable(ServeSettings(run={str(ens.path)!r}, auth=False)); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_rows_of_one_run_are_forecast_together(runs, tmp_path, monkeypatch) -> None:
    """An ensemble of one run's network, its own ensemble row and two of its baselines: served,
    the run's windows are built once, its network runs once per batch and each baseline once per
    request, and the forecasts are those the ensemble scored."""
    import greentune.tasks.forecast.predictor as fp
    from greentune.tasks.forecast.rows import SavedRow

    a, _, _ = runs
    members = [str(a.path), f"{a.path}:ensemble-mean", f"{a.path}:linear", f"{a.path}:lightgbm"]
    ens = ensemble_runs(members, tmp_path / "one-run", ("mean",))
    predictor = gt.Predictor.from_run(ens.path, row="ensemble-mean")
    path = a.config.data.path
    expected = _saved_rows(ens, "ensemble-mean")
    calls: dict[str, int] = {}
    stacked, row_forecast = fp.predict_stacked, SavedRow.forecast

    def counted_stacked(*args, **kwargs):
        calls["network"] = calls.get("network", 0) + 1
        return stacked(*args, **kwargs)

    def counted_row(self, data, origins):
        calls[self.kind] = calls.get(self.kind, 0) + 1
        return row_forecast(self, data, origins)

    cleaned = fp.clean_frame

    def counted_clean(*args, **kwargs):
        calls["windows"] = calls.get("windows", 0) + 1
        return cleaned(*args, **kwargs)

    monkeypatch.setattr(fp, "predict_stacked", counted_stacked)
    monkeypatch.setattr(fp, "clean_frame", counted_clean)
    monkeypatch.setattr(SavedRow, "forecast", counted_row)
    got = predictor.predict_file(path, origins="daily")
    assert calls == {"windows": 1, "network": 1, "ridge": 1, "lightgbm": 1}
    got = got[got["origin"].isin(expected["origin"])].reset_index(drop=True)
    assert len(got) == len(expected) > 0
    np.testing.assert_allclose(got["load_mw_forecast"], expected["y_pred"], rtol=1e-6)
    # two requests in one batch (the server's forward pass): one pass, each as if alone
    calls.clear()
    frame = pd.read_csv(path)
    days = [frame.iloc[: len(frame) - 24 * k] for k in (1, 2)]
    items = [predictor.prepare(d, origins="daily") for d in days]
    batched = predictor.predict_prepared(items)
    assert calls == {"windows": 2, "network": 1, "ridge": 2, "lightgbm": 2}
    for day, out in zip(days, batched, strict=True):
        pd.testing.assert_frame_equal(out, predictor.predict(day, origins="daily"), rtol=1e-6)
