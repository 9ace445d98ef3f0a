import dataclasses
from pathlib import Path

import pytest
import yaml

from greentune.config import (
    RunConfig,
    build_config,
    dump_yaml,
    load_config,
    parse_override,
    replace,
    to_dict,
)
from greentune.errors import ConfigError
from greentune.tasks import TASKS
from greentune.tasks.forecast.task import ForecastTask

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))


def test_defaults_are_the_documented_demo():
    cfg = load_config()
    assert cfg.task == "forecast"
    assert cfg.data.source == "vic2014"
    assert (cfg.data.context_length, cfg.data.horizon) == (None, None)  # from the data
    shaped = ForecastTask().resolve_config(cfg)
    d = shaped.data
    assert (d.context_length, d.horizon, d.val, d.test) == (336, 48, "56D", "56D")
    assert (d.train_stride, d.val_origins, shaped.model.patch_len) == (4, "6", 24)
    assert d.chosen == (
        "horizon 48 steps (1D, day-ahead)",
        "context 336 steps (7D, a week)",
        "val/test 56D each",
        "train stride 4 (about 3,000 training windows)",
        "validation origins every 6 steps",
        "model.patch_len 24",
    )
    assert (cfg.train.lr, cfg.train.patience) == ("auto", "auto")
    assert (shaped.train.lr, shaped.train.patience) == (1e-4, 1)
    assert ForecastTask().resolve_config(shaped) == shaped  # concrete settings stay
    assert cfg.model.backbone == "minilm" and cfg.peft.method == "lora"
    assert cfg.model.quantiles == (0.1, 0.5, 0.9)
    assert cfg.model.dropout == 0.0


def test_folded_channels_are_told_the_greener_stride():
    """Every column of the demo as a series of one channel-independent model: the default
    stride is one series' in config.yaml and in the windows, and the notes name the stride
    that keeps about 3,000 windows of one series."""
    from greentune.data.sources import load_table
    from greentune.data.validate import clean_frame
    from greentune.data.windows import build_forecast_data

    folded = ["data.multivariate=true", "data.channel_independent=true"]
    shaped = ForecastTask().resolve_config(build_config(overrides=folded))
    frame, report = clean_frame(load_table(shaped.data), shaped.data)
    assert len(frame.columns) == 3
    assert shaped.data.train_stride == 4
    fewer = 12  # (17,520 - 2 x 2,688 - 336 - 48) windows x 3 series / 3,000
    assert f"data.train_stride={fewer} would train 981 windows x 3 series" in " ".join(
        shaped.data.chosen
    )
    unshaped = build_config(overrides=folded).data
    unshaped = dataclasses.replace(unshaped, context_length=336, horizon=48)
    data = build_forecast_data(frame, unshaped, report)
    assert data.config is not None and data.config.train_stride == 4
    assert any(f"data.train_stride={fewer}" in n for n in data.report.notes)


def test_precedence_defaults_yaml_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.01\n  epochs: 3\npeft:\n  method: ia3\n")
    cfg = load_config(path, ["train.lr=3e-4", "peft.method=adalora"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.epochs == 3
    assert cfg.peft.method == "adalora"
    assert cfg.train.batch_size == RunConfig().train.batch_size


def test_unknown_key_names_key_and_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key train\.lrr; valid keys: .*\blr\b"):
        build_config(overrides=["train.lrr=1"])


def test_unknown_section():
    with pytest.raises(ConfigError, match=r"unknown key trian; valid keys: task, name"):
        build_config({"trian": {"lr": 1}})


def test_bad_type_names_key():
    with pytest.raises(ConfigError, match=r"train\.epochs must be an integer, got 'many'"):
        build_config(overrides=["train.epochs=many"])


def test_bad_choice_lists_choices():
    with pytest.raises(
        ConfigError,
        match=r"peft\.method='lorax' is not valid; "
        r"valid choices: full, frozen, lora, adalora, ia3, ln, prompt, prefix, adapter",
    ):
        build_config(overrides=["peft.method=lorax"])


def test_value_checks():
    with pytest.raises(ConfigError, match=r"train\.batch_size must be >= 1, got 0"):
        build_config(overrides=["train.batch_size=0"])
    with pytest.raises(ConfigError, match="must include 0.5"):
        build_config(overrides=["model.quantiles=[0.1,0.9]"])


def test_tuple_from_comma_string_and_list():
    assert build_config(overrides=["data.covariates=a,b"]).data.covariates == ("a", "b")
    assert build_config(overrides=["data.covariates=[a, b]"]).data.covariates == ("a", "b")
    assert build_config(overrides=["model.quantiles=[0.05,0.5,0.95]"]).model.quantiles == (
        0.05,
        0.5,
        0.95,
    )


def test_override_syntax():
    assert parse_override("train.epochs=3") == ("train.epochs", 3)
    assert parse_override("data.covariates=[a, b]") == ("data.covariates", ["a", "b"])
    assert parse_override("data.path=/x=y.csv") == ("data.path", "/x=y.csv")
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        parse_override("train.lr")


def test_dump_round_trips_every_default(tmp_path):
    cfg = build_config(
        overrides=["train.lr=0.002", "data.covariates=[t]", "eval.baselines=[linear]"]
    )
    text = dump_yaml(cfg)
    raw = yaml.safe_load(text)
    assert raw["schema_version"] == 1
    assert set(raw["train"]) == set(to_dict(cfg.train))
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert load_config(path) == cfg


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(bad)


def _merged(defaults: dict, written: dict) -> dict:
    """``defaults`` with every key ``written`` in a YAML file put in place (sections merged)."""
    out = dict(defaults)
    for key, value in written.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) else value
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    """Every value the file writes reaches the config, and every other key is the default."""
    raw = yaml.safe_load(path.read_text())
    cfg = load_config(path)
    assert to_dict(cfg) == _merged(to_dict(RunConfig()), raw)


def test_configs_are_shipped():
    """The shipped examples, each with the task, data and method its comment describes."""
    root = CONFIGS[0].parents[1]
    found = {
        str(p.relative_to(root)): (c.task, c.data.source, c.model.backbone, c.peft.method)
        for p in CONFIGS
        for c in [load_config(p)]
    }
    assert found == {
        "classify/example.yaml": ("classify", "vic2014", "minilm", "lora"),
        "classify/sst2.yaml": ("classify", "vic2014", "minilm", "lora"),
        "federated/hourly.yaml": ("forecast", "csv", "minilm", "lora"),
        "forecast/ett_h1.yaml": ("forecast", "ett", "minilm", "ln"),
        "forecast/gpt2_tiny_smoke.yaml": ("forecast", "vic2014", "tiny-gpt2", "lora"),
        "forecast/vic_elec_2012_2014.yaml": ("forecast", "csv", "minilm", "lora"),
        "forecast/vic_ln.yaml": ("forecast", "vic2014", "minilm", "ln"),
        "forecast/vic_lora.yaml": ("forecast", "vic2014", "minilm", "lora"),
        "forecast/vic_text.yaml": ("forecast", "vic2014", "minilm", "lora"),
    }
    # vic_lora.yaml is the default run written out: once shaped by the data, the same run as
    # no file at all (only data.chosen differs: the default's settings were chosen, not written)
    shape = ForecastTask().resolve_config
    written = shape(load_config(root / "forecast" / "vic_lora.yaml"))
    default = shape(load_config())
    assert written.data.chosen == ("validation origins every 6 steps",)
    assert written.train.chosen == ()
    assert default.train.chosen == (
        "train.lr 0.0001 and train.patience 1: the forecast default for peft.method=lora "
        "(chosen on validation of other data, Victoria before 2014, 3 seeds: "
        "benchmarks/results/energy_other_data.md)",
    )
    unchosen = {"data": {"chosen": ()}, "train": {"chosen": ()}}
    assert replace(written, **unchosen) == replace(default, **unchosen)


def test_quantiles_must_increase():
    with pytest.raises(ConfigError, match="strictly increasing"):
        build_config(overrides=["model.quantiles=[0.9,0.5,0.1]"])


def test_yaml_dates_become_strings(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  test: 2014-11-06\n  val: 2014-09-11\n")
    cfg = load_config(path, ["data.val=2014-09-01"])
    assert (cfg.data.test, cfg.data.val) == ("2014-11-06", "2014-09-01")


def test_more_value_checks():
    for override in (
        "eval.batch_size=0",
        "train.max_steps=0",
        "train.patience=0",
        "text.max_length=0",
    ):
        with pytest.raises(ConfigError, match="must be >= 1"):
            build_config(overrides=[override])


def test_privacy_section_checks_its_keys():
    from greentune.config import load_config

    cfg = load_config(None, ["privacy.dp.target_epsilon=3", "privacy.dp.accountant=prv"])
    assert cfg.privacy.dp.enabled and cfg.privacy.dp.accountant == "prv"
    assert not load_config(None, []).privacy.dp.enabled
    with pytest.raises(ConfigError, match="privacy.dp.target_epsilon must be > 0"):
        load_config(None, ["privacy.dp.target_epsilon=0"])
    with pytest.raises(ConfigError, match="privacy.dp.accountant='gdp' is not valid"):
        load_config(None, ["privacy.dp.accountant=gdp"])
    with pytest.raises(ConfigError, match="unknown key privacy.dp.epsilon"):
        load_config(None, ["privacy.dp.epsilon=3"])


def test_revin_needs_the_skip_path_and_ensembles_are_listed_once():
    with pytest.raises(ConfigError, match="model.revin needs model.encoder=patch and"):
        build_config(overrides=["model.revin=true", "model.linear_skip=false"])
    with pytest.raises(ConfigError, match="model.revin needs"):
        build_config(overrides=["model.revin=true", "model.encoder=text"])
    with pytest.raises(ConfigError, match="eval.ensembles lists a kind twice"):
        build_config(overrides=["eval.ensembles=[mean,mean]"])
    # ensemble selection is for classifiers; a forecast gets the kind that fits it named
    with pytest.raises(ConfigError, match=r"selected combines classifiers .*=\[weighted\]"):
        TASKS.get("forecast").resolve_config(build_config(overrides=["eval.ensembles=[selected]"]))
    assert build_config(
        overrides=["task=classify", "eval.ensembles=[mean,selected]"]
    ).eval.ensembles == ("mean", "selected")
    assert build_config(overrides=["model.revin=true"]).model.revin


def test_eval_metric_is_each_tasks_own_score():
    from greentune.tasks.classify.task import ClassifyTask

    forecast, classify = TASKS.get("forecast"), TASKS.get("classify")
    unset = load_config(None, [])
    assert unset.eval.metric is None  # config.yaml records no score the task did not choose
    assert (forecast.quality_of(unset).metric, classify.quality_of(unset).metric) == (
        "mape",
        "macro_f1",
    )
    smape = load_config(None, ["eval.metric=smape"])
    assert forecast.quality_of(smape).metric == "smape"
    accuracy = classify.quality_of(load_config(None, ["task=classify", "eval.metric=accuracy"]))
    assert (accuracy.metric, accuracy.higher_is_better) == ("accuracy", True)
    with pytest.raises(
        ConfigError, match="eval.metric=smape ranks forecasts; a classifier ranks by macro_f1 or"
    ):
        ClassifyTask().resolve_config(load_config(None, ["task=classify", "eval.metric=smape"]))
    with pytest.raises(ConfigError, match="eval.metric=accuracy ranks classifiers; a forecast"):
        ForecastTask().resolve_config(load_config(None, ["eval.metric=accuracy"]))
    with pytest.raises(ConfigError, match="eval.metric='r2' is not valid; valid choices: mape"):
        load_config(None, ["eval.metric=r2"])


def test_cli_data_flags_stay_strings_yaml_would_read_otherwise() -> None:
    """--country NO (Norway) is not false, ON (Ontario) not true, 010 not 8, and a path's
    " #" does not start a comment."""
    from greentune.cli.commands import _data_overrides

    overrides = _data_overrides("load #2.csv", "ts", "010", "temp_c,WorkDay", "NO", "ON", False)
    data = load_config(None, overrides).data
    assert (data.path, data.time_col, data.target) == ("load #2.csv", "ts", "010")
    assert (data.country, data.subdivision) == ("NO", "ON")
    assert tuple(data.covariates or ()) == ("temp_c", "WorkDay")
