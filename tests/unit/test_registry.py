from pathlib import Path

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
    assert METHODS.names() == [
        "adalora",
        "adapter",
        "frozen",
        "full",
        "ia3",
        "ln",
        "lora",
        "prefix",
        "prompt",
    ]  # each one applied to both backbones in tests/unit/test_peft_methods.py
    # every choice the config accepts has an implementation, and nothing more
    from typing import get_args, get_type_hints

    from greentune.config import PeftConfig, TrainConfig

    assert set(get_args(get_type_hints(PeftConfig)["method"])) == set(METHODS.names())
    assert set(get_args(get_type_hints(TrainConfig)["optimizer"])) == set(OPTIMIZERS.names())
    assert OPTIMIZERS.names() == ["adafactor", "adamw", "sgd"]
    assert set(BACKBONES.names()) == {"minilm", "tiny-bert", "tiny-gpt2"}
    peers = ["mlforecast", "mstl", "nhits", "patchtst"]  # registered without their libraries
    assert BASELINES.names() == sorted(
        [
            "seasonal_naive_daily",
            "seasonal_naive_weekly",
            "linear",
            "linear_clock",
            "lightgbm",
            *peers,
        ]
    )


def _bert_parameters(h: int, layers: int, inner: int, positions: int = 512) -> int:
    """A BertModel without pooler, its word embedding cut to one row (the patch encoder)."""
    embeddings = h + positions * h + 2 * h + 2 * h  # word (1 row), position, type, LayerNorm
    attention = 4 * (h * h + h) + 2 * h  # q, k, v, output dense + LayerNorm
    feed_forward = (h * inner + inner) + (inner * h + h) + 2 * h
    return embeddings + layers * (attention + feed_forward)


def _gpt2_parameters(h: int, layers: int, positions: int = 512) -> int:
    """A GPT2Model, its word embedding cut to one row."""
    block = 2 * 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + (h * 4 * h + 4 * h) + (4 * h * h + h)
    return h + positions * h + layers * block + 2 * h  # wte (1 row), wpe, blocks, ln_f


@pytest.mark.parametrize(
    ("name", "model_type", "shape", "parameters", "pretrained"),
    [
        ("tiny-bert", "bert", (32, 2, 2, 64), _bert_parameters(32, 2, 64), False),
        ("tiny-gpt2", "gpt2", (32, 2, 2, 128), _gpt2_parameters(32, 2), False),
        ("minilm", "bert", (384, 6, 12, 1536), _bert_parameters(384, 6, 1536), True),
    ],
)
def test_every_backbone_has_its_config_and_builds(name, model_type, shape, parameters, pretrained):
    """(hidden, layers, heads, feed-forward width) of each built-in, and the model it builds:
    the tiny ones random, MiniLM with the packaged weights."""
    import torch
    from safetensors.torch import load_file

    from greentune.config import ModelConfig
    from greentune.models.backbone import BACKBONES, load_backbone

    config, weights = BACKBONES.get(name)()
    inner = config.intermediate_size if model_type == "bert" else 4 * config.n_embd
    assert config.model_type == model_type and config.vocab_size == 30522
    assert (
        config.hidden_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        inner,
    ) == shape
    assert config.max_position_embeddings == 512
    assert (weights is not None) == pretrained
    model = load_backbone(ModelConfig(backbone=name), keep_word_embeddings=False)
    assert model.config.model_type == model_type and model.config.vocab_size == 1
    assert sum(p.numel() for p in model.parameters()) == parameters
    h = shape[0]
    out = model(inputs_embeds=torch.zeros(2, 5, h)).last_hidden_state
    assert out.shape == (2, 5, h) and torch.isfinite(out).all()
    if pretrained:  # the packaged weights, not a random init
        saved = load_file(str(Path(weights) / "model.safetensors"))
        key = "encoder.layer.0.attention.self.query.weight"
        assert torch.equal(model.state_dict()[key], saved[key])


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
