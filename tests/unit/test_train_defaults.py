"""train.lr and train.patience `auto`: each task's value per PEFT method, said and kept."""

from pathlib import Path

import pytest
import torch

from greentune.config import RunConfig, TrainConfig, build_config, dump_yaml, load_config
from greentune.errors import ConfigError
from greentune.tasks.classify.task import ClassifyTask
from greentune.tasks.forecast.task import TRAIN_DEFAULTS, ForecastTask
from greentune.train.defaults import GENERIC, peak_lr, stop_patience, with_train_defaults
from greentune.train.optim import build_optimizer


def _forecast(*overrides: str) -> RunConfig:
    return with_train_defaults(build_config(overrides=list(overrides)), TRAIN_DEFAULTS, "forecast")


@pytest.mark.parametrize(
    ("method", "lr", "patience"),
    [("lora", 1e-4, 1), ("full", 1e-5, 2), ("ia3", 3e-4, 2), ("adalora", 3e-4, 2)],
)
def test_forecast_defaults_follow_the_peft_method(method: str, lr: float, patience: int) -> None:
    cfg = _forecast(f"peft.method={method}")
    assert (cfg.train.lr, cfg.train.patience) == (lr, patience)
    (note,) = cfg.train.chosen
    assert note.startswith(
        f"train.lr {lr:g} and train.patience {patience}: the forecast default for "
        f"peft.method={method} ("
    )
    if method not in TRAIN_DEFAULTS:
        assert note.endswith(f"({GENERIC.basis})")


def test_what_the_user_gave_is_kept_and_only_auto_is_said() -> None:
    cfg = _forecast("train.lr=3e-3")
    assert (cfg.train.lr, cfg.train.patience) == (3e-3, 1)
    assert cfg.train.chosen[0].startswith("train.patience 1: the forecast default")
    off = _forecast("train.patience=null", "train.lr=5e-4")
    assert (off.train.lr, off.train.patience, off.train.chosen) == (5e-4, None, ())
    assert with_train_defaults(cfg, TRAIN_DEFAULTS, "forecast") == cfg  # resolving again: same


def test_classification_has_no_measured_default_yet() -> None:
    cfg = ClassifyTask().resolve_config(build_config({"task": "classify"}))
    assert (cfg.train.lr, cfg.train.patience) == (3e-4, 2)
    assert cfg.train.chosen == (
        "train.lr 0.0003 and train.patience 2: the classify default for peft.method=lora "
        f"({GENERIC.basis})",
    )


def test_config_yaml_keeps_the_numbers_and_the_reason(tmp_path: Path) -> None:
    cfg = ForecastTask().resolve_config(build_config(overrides=["peft.method=full"]))
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml(cfg))
    again = load_config(path)
    assert again == cfg
    assert (again.train.lr, again.train.patience) == (1e-5, 2)
    assert "train.lr 1e-05 and train.patience 2" in path.read_text()


def test_auto_is_accepted_and_bad_values_are_named() -> None:
    assert build_config(overrides=["train.lr=auto", "train.patience=auto"]).train == TrainConfig()
    with pytest.raises(ConfigError, match=r"train\.lr must be > 0, got -0\.1"):
        build_config(overrides=["train.lr=-0.1"])
    with pytest.raises(ConfigError, match=r"train\.patience must be >= 1, got 0"):
        build_config(overrides=["train.patience=0"])
    with pytest.raises(ConfigError, match=r"train\.lr must be one of: a number, 'auto'; got 'f"):
        build_config(overrides=["train.lr=fast"])


def test_without_a_task_auto_reads_as_the_generic_values() -> None:
    train = TrainConfig()
    assert (peak_lr(train), stop_patience(train)) == (3e-4, 2)
    layer = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(layer.named_parameters(), train)
    assert [g["lr"] for g in optimizer.param_groups] == [3e-4, 3e-4]
    given = TrainConfig(lr=1e-2, patience=None)
    assert (peak_lr(given), stop_patience(given)) == (1e-2, None)
