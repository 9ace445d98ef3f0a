"""train.layer_lr_decay: each depth of the pretrained stack gets its own rate, the loop steps
each parameter by exactly its rate, and 1 (the default) builds the optimizer as before."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from greentune.config import PeftConfig, TrainConfig, build_config
from greentune.errors import ConfigError
from greentune.models.forecaster import Forecaster
from greentune.train.loop import train
from greentune.train.optim import build_optimizer, layer_depths, layer_lr_scales
from greentune.tuning.methods import apply_method
from tests.unit.test_loop import Interrupt, StopAt, ToyData
from tests.unit.test_models import SPEC
from tests.unit.test_peft_methods import CLS, tiny_classifier


def _bert() -> nn.Module:
    return tiny_classifier("bert")


def _groups_by_name(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    return {n: lr_of[id(p)] for n, p in model.named_parameters() if p.requires_grad}


def test_depths_follow_bert_and_gpt2_names_and_leave_new_layers_out():
    bert = dict(layer_depths(n for n, _ in _bert().named_parameters()))
    assert bert["bert.embeddings.word_embeddings.weight"] == 0
    assert bert["bert.embeddings.LayerNorm.weight"] == 0
    assert bert["bert.encoder.layer.0.attention.self.query.weight"] == 1
    assert bert["bert.encoder.layer.1.output.dense.bias"] == 2
    assert bert["classifier.weight"] is None
    depths = layer_depths(n for n, _ in tiny_classifier("gpt2").named_parameters())
    assert depths["transformer.wte.weight"] == 0 and depths["transformer.wpe.weight"] == 0
    assert depths["transformer.h.1.mlp.c_fc.weight"] == 2
    assert depths["transformer.ln_f.weight"] is None and depths["score.weight"] is None


def test_the_decay_scales_each_depth_and_the_peak_groups_come_first():
    model = _bert()
    cfg = TrainConfig(lr=1e-3, layer_lr_decay=0.5, weight_decay=0.1)
    optimizer = build_optimizer(model.named_parameters(), cfg)
    lrs = _groups_by_name(model, optimizer)
    assert lrs["classifier.weight"] == 1e-3
    assert lrs["bert.encoder.layer.1.attention.self.key.weight"] == pytest.approx(5e-4)
    assert lrs["bert.encoder.layer.0.attention.self.key.weight"] == pytest.approx(2.5e-4)
    assert lrs["bert.embeddings.position_embeddings.weight"] == pytest.approx(1.25e-4)
    # every trainable tensor in exactly one group; weight decay still skips biases and norms
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(lrs)
    assert optimizer.param_groups[0]["lr"] == 1e-3  # the loop logs group 0 as the rate
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert decay_of[id(named["bert.encoder.layer.0.attention.self.key.weight"])] == 0.1
    assert decay_of[id(named["bert.encoder.layer.0.attention.self.key.bias"])] == 0.0
    assert decay_of[id(named["bert.embeddings.LayerNorm.weight"])] == 0.0


def test_without_decay_the_groups_are_the_two_of_before():
    """The same groups, members and order as before the decay existed, so checkpoints
    written then load (an optimizer's state is matched by group and position)."""
    model = _bert()
    optimizer = build_optimizer(model.named_parameters(), TrainConfig(lr=1e-3))
    named = list(model.named_parameters())
    before = [
        [id(p) for n, p in named if not (p.ndim < 2 or "norm" in n.lower())],
        [id(p) for n, p in named if p.ndim < 2 or "norm" in n.lower()],
    ]
    assert [[id(p) for p in g["params"]] for g in optimizer.param_groups] == before
    assert [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [
        (1e-3, 0.01),
        (1e-3, 0.0),
    ]
    # two stacks are only refused when the decay is on
    two = ["encoder.layer.0.w", "decoder.layers.0.w"]
    assert set(layer_lr_scales(two, 1.0).values()) == {1.0}
    with pytest.raises(ConfigError, match=r"blocks in 2 stacks \(decoder, encoder\)"):
        layer_lr_scales(two, 0.8)


def test_the_top_is_the_model_top_when_only_lower_blocks_train():
    model = _bert()
    for name, p in model.named_parameters():
        p.requires_grad_("layer.0." in name)
    cfg = TrainConfig(lr=1e-3, layer_lr_decay=0.5)
    lrs = _groups_by_name(model, build_optimizer(model.named_parameters(), cfg))
    assert lrs and all(lr == pytest.approx(2.5e-4) for lr in lrs.values())


def test_lora_matrices_take_their_block_rate_and_the_forecaster_new_layers_the_peak():
    model = apply_method(_bert(), PeftConfig(method="lora", r=4), CLS)
    cfg = TrainConfig(lr=1e-3, layer_lr_decay=0.5)
    lrs = _groups_by_name(model, build_optimizer(model.named_parameters(), cfg))
    lora_0 = [n for n in lrs if "layer.0." in n and "lora_A" in n]
    assert lora_0 and all(lrs[n] == pytest.approx(2.5e-4) for n in lora_0)
    head = [n for n in lrs if "classifier" in n]
    assert head and all(lrs[n] == 1e-3 for n in head)

    backbone = _bert().bert
    forecaster = Forecaster(SPEC, backbone, 32)
    lrs = _groups_by_name(forecaster, build_optimizer(forecaster.named_parameters(), cfg))
    new = [n for n in lrs if n.startswith(("encoder.", "head.", "skip."))]
    assert new and all(lrs[n] == 1e-3 for n in new)
    assert lrs["backbone.encoder.layer.0.output.dense.weight"] == pytest.approx(2.5e-4)


class Stacked(nn.Module):
    """Embeddings, two blocks and a head, named as a BERT names them."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embeddings = nn.Linear(8, 8)
        self.layer = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])
        self.head = nn.Linear(8, 1)

    def forward(self, batch):
        h = torch.tanh(self.embeddings(batch["x"]))
        for block in self.layer:
            h = torch.tanh(block(h))
        return self.head(h).squeeze(-1)

    def loss(self, out, batch):
        return ((out - batch["y"]) ** 2).mean()


def test_the_loop_steps_each_depth_by_its_own_rate():
    """One SGD step from the same start on the same batch: each parameter moves by exactly
    its scale times what it moves without the decay."""
    moved = {}
    for decay in (1.0, 0.5):
        model = Stacked()
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        cfg = TrainConfig(
            lr=0.1,
            optimizer="sgd",
            max_steps=1,
            epochs=1,
            batch_size=16,
            clip_norm=None,
            weight_decay=0.0,
            warmup_ratio=0.0,
            schedule="constant",
            layer_lr_decay=decay,
            patience=None,
            threads=1,
        )
        train(model, ToyData(64), cfg, seed=0)
        moved[decay] = {n: p.detach() - start[n] for n, p in model.named_parameters()}
    expected = {"embeddings": 0.125, "layer.0": 0.25, "layer.1": 0.5, "head": 1.0}
    for name, delta in moved[0.5].items():
        scale = next(s for prefix, s in expected.items() if name.startswith(prefix))
        assert moved[1.0][name].abs().mean() > 1e-4  # atol is float32 rounding beside it
        torch.testing.assert_close(delta, scale * moved[1.0][name], rtol=1e-5, atol=1e-7)


def test_a_resumed_run_keeps_each_depth_on_its_own_rate(tmp_path):
    """Interrupted and resumed with Adam (per-group moments in the checkpoint), the weights
    end as an uninterrupted run's."""
    cfg = TrainConfig(
        lr=1e-2,
        epochs=3,
        batch_size=16,
        layer_lr_decay=0.5,
        patience=None,
        checkpoint_every=3,
        threads=1,
    )
    whole = Stacked()
    train(whole, ToyData(64), cfg, seed=1)
    with pytest.raises(Interrupt):
        train(Stacked(), ToyData(64), cfg, seed=1, checkpoint_dir=tmp_path, callbacks=[StopAt(7)])
    resumed = Stacked()
    train(resumed, ToyData(64), cfg, seed=1, checkpoint_dir=tmp_path, resume=True)
    after = dict(resumed.named_parameters())
    for name, p in whole.named_parameters():
        torch.testing.assert_close(after[name], p, msg=name)


def test_bad_decays_are_refused_with_the_key():
    for bad in ("0", "1.5", "-0.2"):
        with pytest.raises(ConfigError, match=r"train\.layer_lr_decay must be in \(0, 1\]"):
            build_config(overrides=[f"train.layer_lr_decay={bad}"])
    assert build_config(overrides=["train.layer_lr_decay=0.8"]).train.layer_lr_decay == 0.8


def test_methods_that_train_nothing_in_the_stack_are_refused_before_the_run(tmp_path):
    import greentune as gt

    for method in ("frozen", "prompt", "prefix"):
        cfg = build_config(
            overrides=[
                "task=classify",
                f"peft.method={method}",
                "train.layer_lr_decay=0.8",
                f"output_dir={tmp_path}",
                "name=refused",
            ]
        )
        with pytest.raises(ConfigError, match=f"with peft.method={method}: the method trains"):
            gt.run(cfg, echo=lambda m: None)
    assert not (tmp_path / "refused").exists()


def test_a_decay_with_nothing_in_the_stack_to_decay_is_refused():
    head_only = nn.Linear(4, 2)
    with pytest.raises(ConfigError, match=r"train\.layer_lr_decay=0\.8: no trainable parameter"):
        build_optimizer(head_only.named_parameters(), TrainConfig(layer_lr_decay=0.8))
    assert len(build_optimizer(head_only.named_parameters(), TrainConfig()).param_groups) == 2


def test_a_run_says_so_and_records_the_decay(tmp_path):
    from greentune.rundir import RunDir
    from tests.conftest import tiny_classify_run

    run = RunDir.open(tiny_classify_run(tmp_path, 120, 0, "train.layer_lr_decay=0.5").path)
    assert "layer-wise learning rates (train.layer_lr_decay=0.5)" in run.log_path.read_text()
    assert "layer_lr_decay: 0.5" in (run.path / "config.yaml").read_text()
