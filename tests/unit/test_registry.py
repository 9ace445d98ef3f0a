import pytest

from greentune.errors import ConfigError
from greentune.registry import Registry


def test_register_get_and_errors():
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)

    @reg.register("b")
    def b() -> int:
        return 2

    assert reg.get("a") == 1 and reg.get("b")() == 2
    assert reg.names() == ["a", "b"] and "a" in reg and list(reg) == ["a", "b"]
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.add("a", 3)
    with pytest.raises(ConfigError, match="unknown widget 'c'; valid choices: a, b"):
        reg.get("c")


def test_every_registry_entry_is_usable():
    from greentune.data.sources import SOURCES
    from greentune.evaluate.baselines import BASELINES
    from greentune.models.backbone import BACKBONES
    from greentune.train.optim import OPTIMIZERS
    from greentune.tuning.methods import METHODS

    assert SOURCES.names() == ["csv", "ett", "parquet", "vic2014"]
    assert METHODS.names() == ["adalora", "frozen", "full", "ia3", "ln", "lora"]
    # every choice the config accepts has an implementation, and nothing more
    from typing import get_args, get_type_hints

    from greentune.config import PeftConfig, TrainConfig

    assert set(get_args(get_type_hints(PeftConfig)["method"])) == set(METHODS.names())
    assert set(get_args(get_type_hints(TrainConfig)["optimizer"])) == set(OPTIMIZERS.names())
    assert OPTIMIZERS.names() == ["adafactor", "adamw", "sgd"]
    assert set(BACKBONES.names()) == {"minilm", "tiny-bert", "tiny-gpt2"}
    peers = ["mlforecast", "mstl", "nhits", "patchtst"]  # registered without their libraries
    assert BASELINES.names() == sorted(
        ["seasonal_naive_daily", "seasonal_naive_weekly", "linear", "lightgbm", *peers]
    )
    for name in BACKBONES.names():
        config, _ = BACKBONES.get(name)()
        assert config.hidden_size > 0


def test_tasks_recipes_and_the_config_agree():
    """A task is registered with its recipe, and the config accepts exactly those tasks."""
    from typing import get_args, get_type_hints

    from greentune.config import RunConfig
    from greentune.tasks import TASKS
    from greentune.train import recipes  # noqa: F401
    from greentune.train.recipe import RECIPES

    assert TASKS.names() == RECIPES.names() == ["classify", "forecast"]
    assert set(get_args(get_type_hints(RunConfig)["task"])) == set(TASKS.names())
    for name in TASKS.names():
        task = TASKS.get(name)
        assert task.name == name and task.quality.metric
        assert task.resolve_config(RunConfig(task=name)).task == name


def test_carbon_forecasters_and_callbacks_are_registered():
    from greentune.schedule.forecast import FORECASTERS
    from greentune.train.callbacks import CALLBACKS

    assert FORECASTERS.names() == [
        "greentune",
        "lightgbm",
        "noisy",
        "perfect",
        "seasonal-naive",
        "weekly-naive",
    ]
    assert CALLBACKS.names() == ["loss-log", "nan-guard"]


def test_the_tracker_registry_lists_the_built_ins():
    """Each one is exercised end to end in tests/integration/test_tracking.py."""
    from greentune.tracking import TRACKERS

    assert TRACKERS.names() == ["mlflow", "tensorboard", "wandb"]
