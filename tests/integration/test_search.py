"""``greentune search``: an Optuna study with two objectives (validation metric, energy) whose
trials are run directories; resumed, shared by workers, pruned at equal energy."""

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import greentune as gt
import greentune.cli.search  # registers the command
from greentune.cli import app
from greentune.config import dump_yaml
from greentune.errors import ConfigError
from greentune.rundir import RunDir
from greentune.search import SearchOptions, search
from greentune.search import study as study_module
from tests.conftest import make_series, series_overrides

optuna = pytest.importorskip("optuna")
runner = CliRunner()
SPACE = "train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\npeft.r: [4, 8]\n"


def _files(tmp: Path) -> tuple[Path, Path]:
    csv = tmp / "load.csv"
    make_series(days=30).to_csv(csv, index=False)
    cfg = gt.build_config(overrides=[*series_overrides(csv, tmp / "runs"), "train.epochs=2"])
    config, space = tmp / "base.yaml", tmp / "space.yaml"
    config.write_text(dump_yaml(cfg))
    space.write_text(SPACE)
    return config, space


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("search")
    config, space = _files(tmp)
    opts = SearchOptions(space=space, trials=3, config=config, study="s", target=0.05)
    lines: list[str] = []
    return search(opts, lines.append), opts, lines, tmp


def test_every_trial_is_a_run_scored_on_validation_and_energy(searched) -> None:
    result, _, lines, tmp = searched
    assert [t.number for t in result.trials] == [0, 1, 2]
    # trial 0 is the untouched run: train.lr auto as the forecast task resolves it for LoRA
    assert result.default == 0 and result.trials[0].params == {"train.lr": 1e-4, "peft.r": 8}
    assert result.metric == "val_mape"
    for t in result.trials:
        run = RunDir(t.run)
        assert run.path == tmp / "runs" / "s" / f"trial-{t.number:04d}"
        m = run.metrics
        assert set(m.test) == {m.model}  # no baselines in trials
        assert run.config.train.lr == pytest.approx(t.params["train.lr"])
        assert run.config.peft.r == t.params["peft.r"]
        if t.state == "COMPLETE":
            assert t.value == pytest.approx(m.validation[m.model]["mape"])
            assert t.energy_wh == pytest.approx(m.result.bill.energy_wh)
        assert t.run_wh == pytest.approx(m.energy.run_wh)
    assert result.spent_wh == pytest.approx(sum(t.run_wh for t in result.trials))
    assert any(line.startswith("trial 2: train.lr=") for line in lines)


def test_the_front_and_the_recommendation_follow_the_trials(searched) -> None:
    result, opts, _, _ = searched
    done = [t for t in result.trials if t.value is not None]
    front = [
        t.number
        for t in sorted(done, key=lambda t: t.energy_wh)
        if not any(o.value <= t.value and o.energy_wh < t.energy_wh for o in done if o is not t)
    ]
    assert result.front == front
    best = min(done, key=lambda t: t.value)
    assert result.best == best.number
    ok = [t for t in done if t.value <= best.value * (1 + opts.target)]
    assert result.greenest == min(ok, key=lambda t: t.energy_wh).number


def test_a_search_continues_its_study(searched) -> None:
    result, opts, _, _ = searched
    more = search(SearchOptions(**{**opts.__dict__, "trials": 4}), lambda m: None)
    assert [t.number for t in more.trials] == [0, 1, 2, 3]
    assert [t.params for t in more.trials[:3]] == [t.params for t in result.trials]
    assert more.default == 0  # not enqueued again


def test_the_command_prints_the_front_and_writes_the_summary(searched) -> None:
    _, opts, _, tmp = searched
    args = [
        "search",
        str(opts.config),
        str(opts.space),
        "--trials",
        "4",
        "--study",
        "s",
        "--target",
        "5%",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp / "runs" / "s" / "search.json").read_text())
    assert "recommended: trial" in result.output
    # energy is noisy, so the default may itself be the recommendation
    against = (
        "is itself the greenest within 5 % of the best"
        if summary["greenest"] == summary["default"]
        else "against the default configuration"
    )
    assert against in result.output
    # every energy figure says it is modelled (no counters on CI machines)
    assert {t["energy_kind"] for t in summary["trials"] if t["state"] == "COMPLETE"} == {"model"}
    assert "Wh (model)" in result.output and "Wh (model), every trial's whole run" in result.output
    html = (tmp / "runs" / "s" / "search.html").read_text()
    # the page compares the front, the best, the greenest and the default: one run when a
    # single trial is all of them (energy is noisy, so which trials those are varies)
    shown = {summary["greenest"], summary["best"], summary["default"], *summary["front"]}
    assert ("Runs compared" in html) == (len(shown - {None}) > 1)


def test_bad_spaces_are_refused_naming_the_key(tmp_path) -> None:
    config, space = _files(tmp_path)
    for text, message in [
        ("train.nope: [1, 2]\n", "search space key train.nope = 1: unknown key train.nope"),
        ("train.lr: {type: float, low: 1, high: 0.1}\n", "low (1.0) must be below high (0.1)"),
        (
            "train.lr: {type: real, low: 0, high: 1}\n",
            "type must be one of float, int, categorical",
        ),
        ("peft.method: [lora, nope]\n", "search space key peft.method = 'nope'"),
    ]:
        space.write_text(text)
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            search(SearchOptions(space=space, trials=1, config=config), lambda m: None)
        result = runner.invoke(app, ["search", str(config), str(space), "--trials", "1"])
        assert result.exit_code == 2
    # a score the task cannot select on is refused before the study starts
    space.write_text(SPACE)
    picky = ("train.select_on=macro_f1",)
    opts = SearchOptions(space=space, trials=1, config=config, overrides=picky)
    with pytest.raises(ConfigError, match="select_on=macro_f1 is not a validation score of task=f"):
        search(opts, lambda m: None)
    assert not (tmp_path / "runs" / "search-space").exists()


# slow: two worker processes and a kill (70 s); CI keeps the one-worker search
@pytest.mark.slow
def test_two_workers_share_one_study_and_a_dead_workers_trial_is_failed(
    tmp_path, monkeypatch
) -> None:
    config, space = _files(tmp_path)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    common = [
        sys.executable,
        "-m",
        "greentune",
        "search",
        str(config),
        str(space),
        "--storage",
        url,
        "--study",
        "w",
        "--no-default",
        "--no-prune",
        "train.epochs=1",
    ]
    workers = [
        subprocess.Popen(
            [*common, "--trials", "4", "--seed", str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = optuna.load_study(study_name="w", storage=url)
    done = [t for t in study.trials if t.state.is_finished()]
    assert 4 <= len(done) <= 5  # each worker checks the count after its own trial
    assert all(t.state.name == "COMPLETE" for t in done)
    runs = sorted(p.name for p in (tmp_path / "runs" / "w").glob("trial-*"))
    assert runs == [f"trial-{t.number:04d}" for t in done]

    # a worker that died in the middle of a trial: its heartbeat stopped, so the next search
    # fails that trial, counts it, and runs what is left
    monkeypatch.setattr(study_module, "GRACE_S", 1)
    monkeypatch.setattr(study_module, "HEARTBEAT_S", 1)
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=1)
    dead = optuna.load_study(study_name="w", storage=storage).ask()
    storage.record_heartbeat(dead._trial_id)
    time.sleep(3)  # well past the 1 s grace period
    opts = SearchOptions(
        space=space,
        trials=len(done) + 2,
        config=config,
        storage=url,
        study="w",
        with_default=False,
        prune=False,
        overrides=("train.epochs=1",),
    )
    result = search(opts, lambda m: None)
    states = {t.number: t.state for t in result.trials}
    assert states[dead.number] == "FAIL"
    assert sorted(states.values()).count("COMPLETE") == len(done) + 1
    assert math.isfinite(result.trials[-1].value)


def test_a_pruned_trial_stops_training_and_is_recorded_as_pruned(tmp_path, monkeypatch) -> None:
    """The plumbing, made deterministic: finished trials that reached a loss of 0 at no cost
    (the rule's decisions are tested in tests/unit/test_search_space.py)."""
    config, space = _files(tmp_path)
    space.write_text("train.lr: [0.003, 0.001]\n")
    monkeypatch.setattr(study_module, "PRUNE_MIN_TRIALS", 1)
    monkeypatch.setattr(study_module, "_curves", lambda study, select_on: [[(0.0, 0.0)]])
    opts = SearchOptions(
        space=space,
        trials=2,
        config=config,
        study="p",
        sampler="random",
        overrides=("train.epochs=3", "train.patience=null"),
    )
    result = search(opts, lambda m: None)
    assert [t.state for t in result.trials] == ["PRUNED", "PRUNED"]
    for t in result.trials:  # its run completed at the stop, saying why
        training = RunDir(t.run).metrics.training
        assert training.stop_reason.startswith("pruned by the search: best validation score")
        assert training.epochs_run == 1  # the first validation after training started
        assert t.note == training.stop_reason and t.value is None and t.run_wh > 0
    assert result.front == [] and result.greenest is None
    assert result.spent_wh == pytest.approx(sum(t.run_wh for t in result.trials))


def test_a_classification_search_minimises_the_validation_loss(tmp_path) -> None:
    from greentune.data.text import synthetic_incidents

    path = tmp_path / "t.csv"
    synthetic_incidents(120, seed=0).to_csv(path, index=False)
    cfg = gt.build_config(
        overrides=[
            "task=classify",
            "model.backbone=tiny-bert",
            "train.epochs=1",
            "text.max_length=32",
            f"text.path={path}",
            f"output_dir={tmp_path}/runs",
        ]
    )
    config, space = tmp_path / "c.yaml", tmp_path / "space.yaml"
    config.write_text(dump_yaml(cfg))
    space.write_text("train.lr: [0.003, 1.0e-7]\n")
    opts = SearchOptions(
        space=space,
        trials=2,
        config=config,
        study="c",
        sampler="random",
        with_default=False,
        prune=False,
    )
    result = search(opts, lambda m: None)
    # macro-F1 is higher-is-better and has no validation score yet: the objective is minus
    # the validation loss, so "best" is the lowest loss
    assert result.metric == "minus_val_loss"
    for t in result.trials:
        assert t.value == pytest.approx(-RunDir(t.run).metrics.training.best_val_loss)
    assert result.best == max(result.trials, key=lambda t: t.value).number


def test_a_repeated_configuration_reuses_its_result_without_training(tmp_path) -> None:
    # one value per setting: every trial after the default repeats it
    config, space = _files(tmp_path)
    space.write_text("peft.r: [8]\n")
    lines: list[str] = []
    opts = SearchOptions(space=space, trials=2, config=config, study="r", sampler="nsga2")
    result = search(opts, lines.append)
    first, second = result.trials
    assert first.repeat_of is None and second.repeat_of == 0
    same = ("value", "energy_wh", "test", "energy_kind", "run")
    assert [getattr(second, k) for k in same] == [getattr(first, k) for k in same]
    assert second.run_wh == 0.0
    assert not (tmp_path / "runs" / "r" / "trial-0001").exists()  # nothing trained
    assert result.spent_wh == pytest.approx(first.run_wh)
    assert result.front == [0] and result.greenest == 0  # one point per configuration
    assert "trial 1: the configuration of trial 0: its result reused, nothing trained" in lines
