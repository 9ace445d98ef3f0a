"""``greentune ensemble`` of classification runs: the networks' class probabilities averaged (or
their median), every row scored and billed, validation only where the members held out the
same texts."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import greentune as gt
from greentune.cli import app, commands  # noqa: F401  (registers the commands)
from greentune.data.text import synthetic_incidents
from greentune.errors import ConfigError
from greentune.rundir import RunDir
from greentune.tasks.classify.ensemble_runs import (
    combine,
    cross_fitted,
    log_loss,
    select,
)
from tests.conftest import make_series, series_overrides

runner = CliRunner()


def _run(tmp: Path, name: str, *extra: str) -> RunDir:
    train, test = tmp / "train.csv", tmp / "test.csv"
    if not train.exists():
        synthetic_incidents(120, seed=3).to_csv(train, index=False)
        synthetic_incidents(40, seed=4).to_csv(test, index=False)
    cfg = gt.build_config(
        overrides=[
            "task=classify",
            "model.backbone=tiny-bert",
            "train.epochs=2",
            "train.batch_size=16",
            "text.max_length=32",
            f"text.path={train}",
            f"output_dir={tmp / 'runs'}",
            f"name={name}",
            *extra,
        ]
    )
    return gt.run(cfg, echo=lambda m: None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[RunDir], Path]:
    tmp = tmp_path_factory.mktemp("ens-classify")
    same_split = [
        _run(tmp, "a", "train.lr=0.003"),
        _run(tmp, "b", "train.lr=0.01"),
        _run(tmp, "c", "train.lr=0.001", "peft.method=full"),
    ]
    return same_split, tmp


def _probs(run: RunDir, texts: list[str]) -> np.ndarray:
    model = gt.Predictor.from_run(run)
    out = model.predict(texts)
    return out[[f"p_{name}" for name in model.labels]].to_numpy()


def test_runs_of_one_split_combine_their_probabilities_and_are_chosen_on_validation(
    runs,
) -> None:
    (a, b, c), tmp = runs
    out = gt.ensemble([str(a.path), str(b.path), str(c.path)], tmp / "runs" / "ens")
    m = out.metrics
    members = [f"{r.name}/{r.metrics.model}" for r in (a, b, c)]
    assert list(m.test) == [*members, "ensemble-mean", "ensemble-median"]
    assert m.task == "classify" and m.labels == a.metrics.labels
    # a member keeps its scores: its saved model scores the same test texts again
    for row, run in zip(members, (a, b, c), strict=True):
        own = run.metrics.result.scores
        assert m.test[row].scores["accuracy"] == own["accuracy"]
        assert m.test[row].scores["macro_f1"] == pytest.approx(own["macro_f1"], abs=1e-12)
    texts = a.predictions.text.tolist()
    probs = [_probs(r, texts) for r in (a, b, c)]
    preds = out.predictions
    labels = np.asarray(a.metrics.labels)
    for kind, combined in (
        ("mean", np.mean(probs, axis=0)),
        ("median", np.median(probs, axis=0)),
    ):
        expected = labels[combined.argmax(-1)]
        got = preds[preds.model == f"ensemble-{kind}"].y_pred.to_numpy()
        np.testing.assert_array_equal(got, expected)
        y = preds[preds.model == f"ensemble-{kind}"].y_true.to_numpy()
        assert m.test[f"ensemble-{kind}"].scores["accuracy"] == pytest.approx((got == y).mean())
    # one split: every row scored on the shared validation texts, the choice made there
    assert set(m.validation) == set(m.test)
    assert m.energy.chosen_on == "validation" and m.energy.greenest in m.test
    assert set(out.validation_predictions.model) == set(m.test)
    # billed: the members' bills (from their runs) plus this command's windows
    own_wh = m.energy.by_phase_wh["ensemble"]
    members_wh = sum(m.test[n].bill.energy_wh for n in members)
    assert own_wh > 0 and m.energy.by_phase_wh["members"] == pytest.approx(members_wh)
    for kind in ("mean", "median"):
        assert m.test[f"ensemble-{kind}"].bill.energy_wh == pytest.approx(members_wh + own_wh)
    assert out.info.status == "complete"
    # loaded through its members, it labels texts as it labelled the test texts
    model = gt.Predictor.from_run(out)
    got = model.predict(pd.DataFrame({"text": texts}))
    np.testing.assert_array_equal(got["label"], preds[preds.model == "ensemble-mean"].y_pred)
    np.testing.assert_allclose(got[[f"p_{x}" for x in labels]], np.mean(probs, axis=0))
    assert model.with_row("ensemble-median").info["row"] == "ensemble-median"
    alone = model.with_row(members[1]).predict(texts)
    np.testing.assert_allclose(alone[[f"p_{x}" for x in labels]], probs[1])


def test_the_median_of_two_class_probabilities_is_the_majority_vote() -> None:
    probs = [np.array([[0.9, 0.1], [0.4, 0.6]]), np.array([[0.2, 0.8], [0.3, 0.7]])]
    probs.append(np.array([[0.6, 0.4], [0.45, 0.55]]))
    np.testing.assert_array_equal(combine("median", probs).argmax(-1), [0, 1])
    np.testing.assert_allclose(combine("mean", probs), np.mean(probs, axis=0))


def test_selected_weights_are_chosen_on_validation_and_scored_cross_fitted(runs) -> None:
    (a, b, c), tmp = runs
    lines: list[str] = []
    out = gt.ensemble(
        [str(r.path) for r in (a, b, c)],
        tmp / "runs" / "selected",
        kinds=("mean", "selected"),
        log=lines.append,
    )
    m = out.metrics
    members = [f"{r.name}/{r.metrics.model}" for r in (a, b, c)]
    weights = m.ensembles["ensemble-selected"]["weights"]
    assert list(weights) == members and sum(weights.values()) == pytest.approx(1.0)
    # pick counts over a prefix of at most 25 picks
    assert any(
        all(w * k == pytest.approx(round(w * k)) for w in weights.values()) for k in range(1, 26)
    )
    assert any(line.startswith("ensemble-selected: weights chosen on validation") for line in lines)
    # the weights are the validation choice: recomputed from the members' validation scores
    val = out.validation_predictions
    texts = val[val.model == members[0]].text.tolist()
    labels = list(a.metrics.labels)
    y_val = np.array([labels.index(v) for v in val[val.model == members[0]].y_true])
    val_probs = [_probs(r, texts) for r in (a, b, c)]
    chosen = np.array([weights[n] for n in members])
    np.testing.assert_allclose(select(val_probs, y_val), chosen)
    loss = log_loss(y_val)
    mixed = np.einsum("mnc,m->nc", np.stack(val_probs), chosen)
    assert loss(mixed) <= min(loss(p) for p in val_probs) + 1e-9
    # the run opens again (its config.yaml names the kind) and reports it
    assert RunDir.open(out.path).config.eval.ensembles == ("mean", "selected")
    # test texts combined with those weights
    test_texts = a.predictions.text.tolist()
    probs = [_probs(r, test_texts) for r in (a, b, c)]
    preds = out.predictions
    expected = np.asarray(labels)[combine("selected", probs, chosen).argmax(-1)]
    got = preds[preds.model == "ensemble-selected"].y_pred.to_numpy()
    np.testing.assert_array_equal(got, expected)
    served = gt.Predictor.from_run(out.path, row="ensemble-selected").predict(test_texts)
    np.testing.assert_array_equal(served["label"], expected)
    # its validation score is cross-fitted, not the in-sample score of its own choice
    fitted = np.asarray(labels)[cross_fitted(val_probs, y_val).argmax(-1)]
    row = val[val.model == "ensemble-selected"].y_pred.to_numpy()
    np.testing.assert_array_equal(row, fitted)
    assert m.validation["ensemble-selected"]["accuracy"] == pytest.approx(
        (fitted == np.asarray(labels)[y_val]).mean()
    )


def test_members_with_other_seeds_share_a_test_file_but_no_validation(runs) -> None:
    (a, _, _), tmp = runs
    test = f"text.test_path={tmp / 'test.csv'}"
    seeds = [_run(tmp, f"s{s}", f"seed={s}", test, "train.lr=0.003") for s in (0, 1)]
    lines: list[str] = []
    out = gt.ensemble([str(r.path) for r in seeds], tmp / "runs" / "seeds", log=lines.append)
    m = out.metrics
    assert m.validation is None and m.energy.chosen_on == "test"
    assert any("held out different texts" in line for line in lines)
    assert not (out.path / "validation.parquet").exists()
    # a run tested on its own split's texts is refused beside them, naming what differs
    with pytest.raises(ConfigError, match=r"--kinds selected chooses weights on the validation"):
        gt.ensemble([str(r.path) for r in seeds], tmp / "runs" / "sel", kinds=("selected",))
    assert not (tmp / "runs" / "sel").exists()
    with pytest.raises(ConfigError, match=r"runs/a was tested on other texts than .*runs/s0"):
        gt.ensemble([str(seeds[0].path), str(a.path)], tmp / "runs" / "mixed")
    assert not (tmp / "runs" / "mixed").exists()  # refused before anything was written


def test_bad_members_are_refused_with_what_to_do(runs, tmp_path) -> None:
    (a, b, _), _ = runs
    with pytest.raises(ConfigError, match="row 'tfidf_logreg' is a baseline"):
        gt.ensemble([str(a.path), f"{b.path}:tfidf_logreg"], tmp_path / "base")
    valid = "valid choices: mean, median, selected"
    with pytest.raises(ConfigError, match=f"--kinds: weighted; {valid}"):
        gt.ensemble([str(a.path), str(b.path)], tmp_path / "w", kinds=("weighted",))
    with pytest.raises(ConfigError, match="at least two members"):
        gt.ensemble([str(a.path)], tmp_path / "one")
    csv = tmp_path / "load.csv"
    make_series(days=30).to_csv(csv, index=False)
    overrides = [*series_overrides(csv, tmp_path / "runs", "f"), "train.epochs=1"]
    cfg = gt.build_config(overrides=overrides)
    forecast = gt.run(cfg, echo=lambda m: None)
    with pytest.raises(ConfigError, match=r"a forecast run; this ensemble combines classify runs"):
        gt.ensemble([str(a.path), str(forecast.path)], tmp_path / "mixed")
    assert not any((tmp_path / n).exists() for n in ("base", "w", "one", "mixed"))


def test_the_command_combines_classifiers_and_refuses_with_exit_2(runs) -> None:
    (a, b, _), tmp = runs
    out = tmp / "runs" / "cli"
    ok = runner.invoke(app, ["ensemble", str(a.path), str(b.path), "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "ensemble-mean" in ok.output and "ensemble-median" in ok.output
    frame = pd.read_parquet(out / "predictions.parquet")
    assert set(frame.model) == {
        "a/" + a.metrics.model,
        "b/" + b.metrics.model,
        "ensemble-mean",
        "ensemble-median",
    }
    bad = runner.invoke(
        app, ["ensemble", str(a.path), str(b.path), "--out", str(tmp / "k"), "--kinds", "vote"]
    )
    assert bad.exit_code == 2 and "--kinds: vote; valid choices" in " ".join(bad.output.split())
    assert "Traceback" not in bad.output


def test_a_served_classifier_ensemble_answers_with_its_combined_probabilities(runs) -> None:
    """Over HTTP: the selected ensemble's labels and probabilities equal the predictor's, which
    weighs the members' probabilities with the weights chosen on validation."""
    from fastapi.testclient import TestClient

    from greentune.serve.app import build_service, create_app
    from greentune.serve.settings import ServeSettings

    (a, b, c), tmp = runs
    out = gt.ensemble([str(r.path) for r in (a, b, c)], tmp / "runs" / "served", ("selected",))
    texts = ["feeder 12 tripped at the substation", "meter reading late", "outage on main st"]
    settings = ServeSettings(run=str(out.path), auth=False)
    with TestClient(create_app(build_service(settings))) as client:
        r = client.post("/v1/classify", json={"texts": texts})
        assert r.status_code == 200, r.text
        body = r.json()
    assert body["model"]["row"] == "ensemble-selected"
    weights = np.array(list(out.metrics.ensembles["ensemble-selected"]["weights"].values()))
    labels = list(a.metrics.labels)
    mixed = np.einsum("mnc,m->nc", np.stack([_probs(r, texts) for r in (a, b, c)]), weights)
    assert [p["label"] for p in body["predictions"]] == [labels[i] for i in mixed.argmax(-1)]
    got = [[p["probabilities"][x] for x in labels] for p in body["predictions"]]
    np.testing.assert_allclose(got, mixed, rtol=1e-5)
