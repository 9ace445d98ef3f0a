"""Compression building blocks on tiny models: option parsing, dropping layers, layer choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel, BertConfig, BertModel, GPT2Config, GPT2Model

from greentune.compress.methods import COMPRESSORS, parse_method
from greentune.compress.pipeline import variant_name
from greentune.compress.recover import keep_layers, layer_list
from greentune.errors import ConfigError


def test_the_registry_lists_every_method():
    assert COMPRESSORS.names() == [
        "distill",
        "int8-dynamic",
        "onnx",
        "onnx-int8",
        "prune",
        "prune-layers",
    ]


def test_parse_method_options_and_defaults():
    assert parse_method("prune") == (
        "prune",
        {"sparsity": 0.5, "epochs": 1, "lr": 1e-4, "alpha": 0.5},
    )
    _, options = parse_method("prune:sparsity=70%,epochs=2")
    assert options["sparsity"] == pytest.approx(0.7) and options["epochs"] == 2
    with pytest.raises(ConfigError, match=r"takes sparsity=, epochs=, lr=, alpha="):
        parse_method("prune:spars=1")
    with pytest.raises(ConfigError, match="must be a number, got 'x'"):
        parse_method("distill:layers=x")


def test_variant_names_say_which_options_differ(tmp_path):
    parent = tmp_path / "vic"
    assert variant_name(parent, "prune", parse_method("prune")[1]) == "vic-prune"
    assert variant_name(parent, "prune", parse_method("prune:sparsity=0.7")[1]) == (
        "vic-prune-sparsity0.7"
    )


def _bert(layers: int = 4) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64
    )
    return BertModel(config, add_pooling_layer=False).eval()


def test_kept_layers_are_the_teachers_and_the_folder_reloads(tmp_path):
    model = _bert()
    before = [layer_list(model)[2][i].attention.self.query.weight.clone() for i in (0, 3)]
    keep_layers(model, [3, 0])
    blocks = layer_list(model)[2]
    assert len(blocks) == 2 and model.config.num_hidden_layers == 2
    assert torch.equal(blocks[0].attention.self.query.weight, before[0])
    assert torch.equal(blocks[1].attention.self.query.weight, before[1])
    model.save_pretrained(tmp_path)
    again = AutoModel.from_pretrained(tmp_path, add_pooling_layer=False).eval()
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        assert torch.equal(
            model(inputs_embeds=x).last_hidden_state, again(inputs_embeds=x).last_hidden_state
        )


def test_gpt2_blocks_are_found_and_reindexed():
    model = GPT2Model(GPT2Config(n_embd=32, n_layer=3, n_head=2, n_positions=64))
    keep_layers(model, [2])
    assert model.config.n_layer == 1 and len(model.h) == 1
    assert model.h[0].attn.layer_idx == 0


def test_bad_layer_lists_are_refused():
    from greentune.errors import CompressError

    with pytest.raises(CompressError, match=r"distinct indices < 4"):
        keep_layers(_bert(), [0, 0])
    with pytest.raises(CompressError, match=r"distinct indices < 4"):
        keep_layers(_bert(), [4])


def test_greedy_choice_drops_the_layer_that_does_nothing():
    """A block whose output projections are zero leaves the residual stream unchanged: removing
    it costs nothing, so it goes first."""
    from types import SimpleNamespace

    from greentune.compress.recover import greedy_layer_choice

    model = _bert(3)
    with torch.no_grad():
        for p in (
            model.encoder.layer[1].attention.output.dense,
            model.encoder.layer[1].output.dense,
        ):
            p.weight.zero_()
            p.bias.zero_()
    model.encoder.layer[1].attention.output.LayerNorm.reset_parameters()
    model.encoder.layer[1].output.LayerNorm.reset_parameters()
    x = torch.randn(8, 5, 32)
    with torch.no_grad():
        target = model(inputs_embeds=x).last_hidden_state

    class Batches:
        def __len__(self) -> int:
            return 8

        def get(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
            return {"x": x[idx], "y": target[idx]}

    class Wrapper(torch.nn.Module):
        def __init__(self, backbone: BertModel) -> None:
            super().__init__()
            self.backbone = backbone

        def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.backbone(inputs_embeds=batch["x"]).last_hidden_state

        def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return ((out - batch["y"]) ** 2).mean()

    task = SimpleNamespace(
        task="forecast",
        cfg=SimpleNamespace(eval=SimpleNamespace(batch_size=64)),
        batches={"val": Batches()},
        inner=lambda m: m.backbone,
    )
    kept, trail = greedy_layer_choice(task, Wrapper(model), keep=2)  # type: ignore[arg-type]
    assert kept == [0, 2]
    assert trail[0]["dropped"] == 1 and trail[0]["val_loss"] < 1e-10


def test_compress_options_are_built_by_the_config_system():
    from greentune.compress import CompressOptions
    from greentune.config import build
    from greentune.errors import ConfigError

    opts = build(
        CompressOptions, {"methods": ["onnx"], "max_metric_drop": "1%", "plan": {"rounds": 3}}
    )
    assert opts.drop_limit == pytest.approx(0.01) and opts.plan.rounds == 3
    assert opts.plan.calls_b1 == 20  # defaults filled in
    cases = [
        ({"methods": ["onnx"], "plan": {"rounds": 0}}, "rounds must be >= 1, got 0"),
        ({"methods": ["onnx"], "plan": {"round": 2}}, "unknown key plan.round; valid keys"),
        ({"methods": ["onnx"], "max_metric_drop": "a lot"}, "max_metric_drop must look like 1%"),
        ({"methods": ["onnx"], "threads": 0}, "threads must be >= 1"),
        ({"methods": []}, "give at least one method"),
    ]
    for raw, message in cases:
        with pytest.raises(ConfigError, match=message):
            build(CompressOptions, raw)
