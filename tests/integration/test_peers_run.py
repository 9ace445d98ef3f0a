"""Peers as rows of a run: scored on the run's test windows, billed in the ledger, given
validation scores, and able to join an ensemble."""

from pathlib import Path

import numpy as np
import pytest

import greentune as gt
from tests.conftest import make_series, series_overrides

pytest.importorskip("neuralforecast")
pytest.importorskip("mlforecast")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("peers")
    csv = tmp / "load.csv"
    make_series().to_csv(csv, index=False)
    cfg = gt.build_config(
        overrides=[
            *series_overrides(csv, tmp / "runs", "peers"),
            "train.epochs=1",
            "eval.baselines=[seasonal_naive_daily,lightgbm,nhits,mlforecast]",
            "eval.peer_max_steps=20",
            "eval.ensemble_members=[model,lightgbm,nhits]",
        ]
    )
    return gt.run(cfg, echo=lambda m: None)


def test_peers_are_rows_on_the_same_windows(run) -> None:
    m = run.metrics
    assert {"nhits", "mlforecast"} <= set(m.test)
    preds = run.predictions
    keys = ["origin", "step", "target"]
    model = preds[preds.model == m.model].sort_values(keys)
    for peer in ("nhits", "mlforecast"):
        rows = preds[preds.model == peer].sort_values(keys)
        assert len(rows) == len(model) == m.data["windows"]["test"] * 24
        np.testing.assert_array_equal(rows.y_true.to_numpy(), model.y_true.to_numpy())
        assert np.isfinite(rows.y_pred).all()
        assert m.test[peer].scores["mape"] < 25.0  # a daily cycle of +-20 on 100: naive-level
        assert m.validation is not None and peer in m.validation


def test_peers_are_billed_in_their_own_window(run) -> None:
    m = run.metrics
    ledger = {r["window"] for r in run.ledger.rows}
    for peer in ("nhits", "mlforecast"):
        assert f"baseline/{peer}" in ledger
        assert m.test[peer].bill.energy_wh > 0.0
    # NHITS trains a network: it costs more than the LightGBM fit on the same rows
    assert m.test["nhits"].bill.energy_wh > m.test["mlforecast"].bill.energy_wh


def test_a_peer_joins_an_ensemble(run) -> None:
    m = run.metrics
    assert m.ensembles is not None
    assert m.ensembles["ensemble-weighted"]["members"] == ["model", "lightgbm", "nhits"]
    weights = np.asarray(m.ensembles["ensemble-weighted"]["weights_by_step"])
    assert weights.shape == (24, 3)


def test_no_lightning_files_are_left_behind(run, tmp_path: Path) -> None:
    root = run.path.parent.parent
    assert not list(root.rglob("lightning_logs")) and not list(root.rglob("*.ckpt"))
    assert not Path("lightning_logs").exists()
