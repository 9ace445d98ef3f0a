"""``tracking.to``: what a run sends to MLflow, TensorBoard and W&B (offline), read back with
each one's own reader, and what happens when a tracker cannot start or fails."""

import json
from pathlib import Path

import pytest

import greentune as gt
from greentune.errors import ConfigError, TrackingError, TrainingError
from greentune.rundir import RunDir
from greentune.tracking import TRACKERS
from greentune.tracking.base import flatten, metric_name
from greentune.train.callbacks import Callback
from tests.conftest import make_series, series_overrides
from tests.integration.wandb_log import items, records

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")
pytest.importorskip("wandb")


def _run(tmp: Path, name: str, *extra: str, callbacks=()) -> RunDir:
    csv = tmp / "load.csv"
    if not csv.exists():
        make_series().to_csv(csv, index=False)
    cfg = gt.build_config(
        overrides=[
            *series_overrides(csv, tmp / "runs", name),
            "train.epochs=2",
            "eval.baselines=[linear]",
            *extra,
        ]
    )
    return gt.run(cfg, echo=lambda m: None, callbacks=callbacks)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    tmp = tmp_path_factory.mktemp("tracking")
    return _run(tmp, "t", "tracking.to=[mlflow,tensorboard,wandb]", "eval.report=true")


def _client(run: RunDir):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{run.path.parent / 'mlflow.db'}")


def test_mlflow_gets_the_config_curves_scores_energy_and_files(tracked) -> None:
    client = _client(tracked)
    run_id = tracked.info.extra["tracking"]["mlflow"]
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "t"
    params = got.data.params
    assert params["data.horizon"] == "24" and params["train.epochs"] == "2"
    assert params["tracking.to"] == "('mlflow', 'tensorboard', 'wandb')"
    m = tracked.metrics
    loss = client.get_metric_history(run_id, "train/loss")
    assert [p.step for p in loss] == list(range(1, m.training.steps + 1))
    assert [p.value for p in loss] == pytest.approx(m.training.loss_curve, abs=1e-6)
    val = client.get_metric_history(run_id, "val/loss")
    assert [p.step for p in val] == [r["step"] for r in m.training.val_curve]
    assert [p.value for p in val] == pytest.approx([r["val_loss"] for r in m.training.val_curve])
    metrics = got.data.metrics
    for row, result in m.test.items():
        assert metrics[f"test/{row}/mape"] == pytest.approx(result.scores["mape"])
        assert metrics[f"test/{row}/energy_wh"] == pytest.approx(result.bill.energy_wh)
        assert got.data.tags[f"test.{row}.energy_kind"] == result.bill.energy_kind == "model"
        assert metrics[f"val/{row}/mape"] == pytest.approx(m.validation[row]["mape"])
    phases = tracked.energy_by_phase("run")
    for phase, row in phases.iterrows():
        assert metrics[f"energy/{phase}/energy_wh"] == pytest.approx(row["energy_wh"])
        assert got.data.tags[f"energy.{phase}.kind"] == ",".join(row["kinds"])
    assert metrics["energy/run/energy_wh"] == pytest.approx(phases["energy_wh"].sum())
    assert got.data.tags["greenest"] == m.energy.greenest
    assert got.data.tags["energy.kind"] == ",".join(m.energy.kinds)
    # the files stay beside the store, not in whatever folder the command ran from
    assert (tracked.path.parent / "mlartifacts").is_dir() and not Path("mlruns").exists()
    artifacts = sorted(a.path for a in client.list_artifacts(run_id))
    assert artifacts == ["config.yaml", "energy.json", "log.txt", "metrics.json", "report.html"]


def test_tensorboard_event_files_hold_the_same_numbers(tracked) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked.path / "tensorboard"))
    events.Reload()
    m = tracked.metrics
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, m.training.steps + 1))
    assert [e.value for e in loss] == pytest.approx(m.training.loss_curve, abs=1e-5)
    assert [e.step for e in events.Scalars("val/loss")] == [r["step"] for r in m.training.val_curve]
    mape = events.Scalars(f"test/{m.model}/mape")
    assert mape[0].value == pytest.approx(m.result.scores["mape"], rel=1e-6)
    assert {"config/text_summary", "files/text_summary"} <= set(events.Tags()["tensors"])


def test_wandb_offline_run_holds_the_config_history_and_summary(tracked) -> None:
    run_id = tracked.info.extra["tracking"]["wandb"]
    (path,) = (tracked.path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    history, summary, config = [], {}, {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(items(record))
        elif kind == "summary":
            summary.update(items(record))
        elif kind == "config":
            config.update(items(record))
    m = tracked.metrics
    losses = [(int(h["_step"]), float(h["train/loss"])) for h in history if "train/loss" in h]
    assert [s for s, _ in losses] == list(range(1, m.training.steps + 1))
    assert [v for _, v in losses] == pytest.approx(m.training.loss_curve, abs=1e-6)
    assert float(summary[f"test/{m.model}/mape"]) == pytest.approx(m.result.scores["mape"])
    assert json.loads(config["data.horizon"]) == "24"
    assert any(r.WhichOneof("record_type") == "artifact" for r in records(path))


class _Boom(Callback):
    def on_step_end(self, state, loss):
        if state.step == 3:
            raise TrainingError("stopped by the test")


def test_a_failed_run_is_marked_failed_in_mlflow(tmp_path) -> None:
    with pytest.raises(TrainingError):
        _run(tmp_path, "f", "tracking.to=[mlflow]", callbacks=[_Boom()])
    run = RunDir(tmp_path / "runs" / "f")
    got = _client(run).get_run(run.info.extra["tracking"]["mlflow"])
    assert got.info.status == "FAILED"
    assert len(_client(run).get_metric_history(got.info.run_id, "train/loss")) == 3


def test_a_tracker_that_cannot_start_stops_the_run_before_any_work(tmp_path) -> None:
    with pytest.raises(
        ConfigError,
        match="unknown tracking.to entry 'nope'; valid choices: mlflow, tensorboard, wandb",
    ):
        _run(tmp_path, "n", "tracking.to=[nope]")
    with pytest.raises(
        TrackingError,
        match=r"MLflow at nosuch://x cannot be used .* fix "
        "tracking.mlflow_uri, or remove mlflow from tracking.to",
    ):
        _run(tmp_path, "u", "tracking.to=[mlflow]", "tracking.mlflow_uri=nosuch://x")
    assert not (tmp_path / "runs" / "u" / "checkpoints").exists()
    with pytest.raises(ConfigError, match="tracking.to lists a tracker twice"):
        gt.build_config(overrides=["tracking.to=[mlflow,mlflow]"])


class _Flaky:
    name, run_id = "flaky", None

    def __init__(self, ctx) -> None:
        self.calls = 0

    def log_params(self, params) -> None:
        pass

    def set_tags(self, tags) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        raise ConnectionError("server went away")

    def log_history(self, rows) -> None:
        raise ConnectionError("server went away")

    def log_files(self, paths) -> None:
        pass

    def finish(self, status) -> None:
        pass


def test_a_tracker_that_fails_mid_run_is_left_out_and_the_run_completes(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setitem(TRACKERS._items, "flaky", _Flaky)
    run = _run(tmp_path, "k", "tracking.to=[flaky]")
    assert run.info.status == "complete"
    log = (run.path / "log.txt").read_text()
    left_out = "tracking: flaky left out after an error in log_metrics: server went away"
    assert log.count(left_out) == 1


def test_names_and_parameters_are_what_trackers_accept() -> None:
    assert flatten({"a": {"b": 1, "c": None}, "d": (1, 2)}) == {
        "a.b": "1",
        "a.c": "null",
        "d": "(1, 2)",
    }
    assert metric_name("test", "net+int8:v2", "mape") == "test/net_int8_v2/mape"


def test_a_paused_run_resumes_into_the_same_tracked_run(tmp_path) -> None:
    import os
    import signal

    from greentune.train import pause

    previous = signal.getsignal(signal.SIGTERM)

    class SigtermAt5(Callback):
        def on_step_end(self, state, loss):
            if state.step == 5:
                os.kill(os.getpid(), signal.SIGTERM)

    try:
        with pytest.raises(SystemExit) as stopped:
            _run(tmp_path, "p", "tracking.to=[mlflow]", callbacks=[SigtermAt5()])
        assert stopped.value.code == pause.EXIT_CODE
        run = RunDir(tmp_path / "runs" / "p")
        run_id = run.info.extra["tracking"]["mlflow"]
        assert _client(run).get_run(run_id).info.status == "KILLED"
        done = gt.run(resume=run.path, echo=lambda m: None)
    finally:
        signal.signal(signal.SIGTERM, previous)
    client = _client(done)
    assert done.info.extra["tracking"]["mlflow"] == run_id
    experiment = client.get_experiment_by_name("greentune")
    assert len(client.search_runs([experiment.experiment_id])) == 1
    assert client.get_run(run_id).info.status == "FINISHED"
    steps = [p.step for p in client.get_metric_history(run_id, "train/loss")]
    assert steps == list(range(1, done.metrics.training.steps + 1))


def test_every_registered_tracker_starts_writes_and_finishes(tmp_path):
    """Each registered tracker, built for a throwaway run, takes every call of the protocol
    (the libraries are optional: a tracker whose package is missing says how to install it)."""
    from pathlib import Path

    from greentune.errors import TrackingError
    from greentune.tracking import TRACKERS, TrackerContext

    ctx = TrackerContext(
        run_dir=tmp_path,
        run_name="r",
        experiment="e",
        mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        tensorboard_dir=tmp_path / "tb",
        mlflow_artifacts=(tmp_path / "mlartifacts").as_uri(),
    )
    (tmp_path / "f.txt").write_text("x")
    for name in TRACKERS.names():
        try:
            tracker = TRACKERS.get(name)(ctx)
        except TrackingError as exc:
            assert "pip install 'greentune[tracking]'" in str(exc)
            continue
        tracker.log_params({"a.b": "1"})
        tracker.log_history({1: {"train/loss": 0.5}, 2: {"train/loss": 0.4}})
        tracker.log_metrics({"test/m/mape": 3.0})
        tracker.set_tags({"k": "v"})
        tracker.log_files([Path(tmp_path / "f.txt")])
        tracker.finish("complete")
