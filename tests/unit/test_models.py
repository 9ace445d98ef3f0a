import numpy as np
import pytest
import torch

from greentune.config import ModelConfig, PeftConfig
from greentune.errors import ModelError
from greentune.models.backbone import count_parameters, load_backbone, load_tokenizer
from greentune.models.encoders import PatchEncoder, window_prompts
from greentune.models.forecaster import Forecaster, ForecasterSpec, load_forecaster, save_forecaster
from greentune.tuning.methods import MethodContext, apply_method

SPEC = ForecasterSpec(
    "patch",
    n_channels=3,
    n_known=2,
    n_targets=1,
    context_length=48,
    horizon=24,
    patch_len=12,
    quantiles=(0.1, 0.5, 0.9),
    linear_skip=True,
    pooling="mean",
)


def batch(b: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "past": torch.randn(b, 48, 3, generator=g),
        "future": torch.randn(b, 24, 2, generator=g),
        "y": torch.randn(b, 24, 1, generator=g),
    }


def build(
    backbone: str = "tiny-bert", method: str = "lora", spec: ForecasterSpec = SPEC
) -> Forecaster:
    torch.manual_seed(0)
    bb = load_backbone(ModelConfig(backbone=backbone), keep_word_embeddings=spec.encoder == "text")
    bb = apply_method(bb, PeftConfig(method=method), MethodContext(total_steps=10))
    return Forecaster(spec, bb, bb.config.hidden_size)


def test_patch_encoder_pads_context_on_the_left():
    enc = PatchEncoder(n_channels=1, n_known=1, context_length=10, horizon=5, patch_len=4, hidden=8)
    assert (enc.n_past, enc.n_future, enc.n_tokens) == (3, 2, 5)
    past = torch.arange(10.0).view(1, 10, 1)
    patches = enc._past_patches(past)
    assert patches[0, 0].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert patches[0, 2].tolist() == [6.0, 7.0, 8.0, 9.0]
    assert enc._future_patches(torch.ones(1, 5, 1))[0, 1].tolist() == [1.0, 0.0, 0.0, 0.0]


def test_overlapping_patches_end_at_the_newest_step():
    enc = PatchEncoder(1, 0, context_length=11, horizon=5, patch_len=4, hidden=8, stride=2)
    assert enc.n_past == 5  # one padded step in front, so the last patch is steps 7..10
    patches = enc._past_patches(torch.arange(1.0, 12.0).view(1, 11, 1))
    assert patches[0].tolist() == [
        [0, 1, 2, 3],
        [2, 3, 4, 5],
        [4, 5, 6, 7],
        [6, 7, 8, 9],
        [8, 9, 10, 11],
    ]
    # two channels: each patch flattened step-major, exactly as the non-overlapping reshape
    two = torch.stack([torch.arange(8.0), -torch.arange(8.0)], dim=-1).view(1, 8, 2)
    plain = PatchEncoder(2, 0, 8, 4, patch_len=4, hidden=8)
    same = PatchEncoder(2, 0, 8, 4, patch_len=4, hidden=8, stride=4)
    assert torch.equal(plain._past_patches(two), same._past_patches(two))
    lapped = PatchEncoder(2, 0, 8, 4, patch_len=4, hidden=8, stride=2)._past_patches(two)
    assert lapped[0, 1].tolist() == [2, -2, 3, -3, 4, -4, 5, -5]


def test_revin_encoder_sees_scale_free_windows_and_scales_its_correction():
    spec = ForecasterSpec(**{**SPEC.__dict__, "revin": True, "patch_stride": 6})
    model = build(spec=spec).eval()
    torch.nn.init.normal_(model.head.weight, std=0.01)  # a trained head, not the zero start
    b = batch()
    moved = dict(b, past=b["past"].clone())
    moved["past"][..., 0] = 3.0 * b["past"][..., 0] + 5.0  # the target: new level and scale
    seen = []
    model.encoder.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        head_only = model.skip
        model.skip = None
        out, out_moved = model(b), model(moved)
        model.skip = head_only
    torch.testing.assert_close(seen[0], seen[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out_moved, 3.0 * out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backbone", ["tiny-bert", "tiny-gpt2"])
@pytest.mark.parametrize("method", ["full", "frozen", "lora", "adalora", "ia3", "ln"])
def test_every_method_trains_and_round_trips(backbone, method, tmp_path):
    model = build(backbone, method)
    b = batch()
    out = model(b)
    assert out.shape == (4, 24, 1, 3)
    model.loss(out, b).backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    if method != "frozen":  # the head is zero-initialised: gradients reach the backbone via it
        model.head.weight.data.normal_(0, 0.01)
        model.zero_grad()
        model.loss(model(b), b).backward()
        grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)
    trainable, total = count_parameters(model)
    bb_trainable, bb_total = count_parameters(model.backbone)
    assert 0 < trainable <= total
    if method == "full":
        assert bb_trainable == bb_total
    elif method == "frozen":
        assert bb_trainable == 0
    else:
        assert 0 < bb_trainable < bb_total / 5
    save_forecaster(model, tmp_path / "model")
    loaded = load_forecaster(tmp_path / "model")
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(b), model(b))
    # the patch encoder feeds inputs_embeds: the saved backbone has no word-embedding matrix
    assert loaded.backbone.get_input_embeddings().weight.shape[0] == 1


def test_loadable_without_greentune(tmp_path):
    """The saved folder loads with transformers + peft + safetensors (docs/model-format.md)."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModel

    model = build("tiny-bert", "lora").eval()
    save_forecaster(model, tmp_path / "m")
    base = AutoModel.from_pretrained(tmp_path / "m" / "backbone")
    bb = PeftModel.from_pretrained(base, tmp_path / "m" / "adapter").eval()
    heads = load_file(str(tmp_path / "m" / "heads.safetensors"))
    b = batch(2)
    with torch.no_grad():
        p = b["past"].view(2, 4, 12 * 3)
        f = b["future"].view(2, 2, 12 * 2)
        emb = torch.cat(
            [
                p @ heads["encoder.past_proj.weight"].T + heads["encoder.past_proj.bias"],
                f @ heads["encoder.future_proj.weight"].T + heads["encoder.future_proj.bias"],
            ],
            1,
        )
        h = bb(inputs_embeds=emb).last_hidden_state.flatten(1)
        flat = torch.cat([b["past"].flatten(1), b["future"].flatten(1)], 1)
        out = (
            h @ heads["head.weight"].T
            + heads["head.bias"]
            + flat @ heads["skip.weight"].T
            + heads["skip.bias"]
        )
        assert torch.allclose(out.view(2, 24, 1, 3), model(b), atol=1e-5)


def test_quantile_loss_is_pinball():
    model = build()
    y = torch.zeros(1, 24, 1)
    out = torch.ones(1, 24, 1, 3)  # over-forecast by 1 for every quantile
    loss = model.loss(out, {"y": y})
    assert loss.item() == pytest.approx(np.mean([0.9, 0.5, 0.1]))


def test_minilm_drops_word_embeddings():
    """Real weights: feeding inputs_embeds, MiniLM keeps 11.3 M of its 22.7 M parameters."""
    full = load_backbone(ModelConfig(), keep_word_embeddings=True)
    lean = load_backbone(ModelConfig(), keep_word_embeddings=False)
    n_full, n_lean = count_parameters(full)[1], count_parameters(lean)[1]
    assert n_full == 22_713_216 - 384 * 384 - 384  # all-MiniLM-L6-v2 without its pooler
    assert n_full - n_lean == 30_521 * 384
    assert torch.equal(
        full.encoder.layer[0].attention.self.query.weight,
        lean.encoder.layer[0].attention.self.query.weight,
    )


def test_text_encoder_prompts_and_forward(tiny_series):
    frame = tiny_series.set_index("ts")
    frame["holiday"] = 0.0
    prompts = window_prompts(frame, ["load_mw"], ["temp_c"], np.array([48, 72]), 48, 24)
    assert prompts[0].startswith("Wednesday 6 January 2021, 00:00. temp_c next: ")
    assert "load_mw 2 days before:" in prompts[0]
    spec = ForecasterSpec(**{**SPEC.__dict__, "encoder": "text"})
    model = build("tiny-bert", "lora", spec)
    tok = load_tokenizer(ModelConfig(backbone="tiny-bert"))
    enc = tok(prompts, padding=True, return_tensors="pt")
    b = {**batch(2), "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    assert model(b).shape == (2, 24, 1, 3)


def test_unknown_backbone_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="neither a built-in .*minilm, tiny-bert, tiny-gpt2"):
        load_backbone(
            ModelConfig(backbone=str(tmp_path / "nothing-here")), keep_word_embeddings=True
        )
    with pytest.raises(ModelError, match="num_layers=9 but the backbone has 2"):
        load_backbone(ModelConfig(backbone="tiny-bert", num_layers=9), keep_word_embeddings=True)
