"""The PEFT family beyond LoRA: DoRA / rsLoRA, prompt and prefix tuning, bottleneck adapters.

Each method on tiny random BERT and GPT-2 models (hidden 32, 2 layers, 2 heads, vocab 100):
one optimizer step moves the adapter and nothing frozen, saved models load back with the same
outputs, and the combinations that cannot work are refused with what to use instead.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForSequenceClassification, BertConfig, GPT2Config

from greentune.config import ModelConfig, PeftConfig, TrainConfig, build_config
from greentune.errors import ConfigError
from greentune.models.backbone import load_backbone, load_tokenizer
from greentune.models.classifier import (
    TextClassifier,
    classifier_from_config,
    load_saved_classifier,
    save_classifier,
)
from greentune.models.forecaster import Forecaster, load_forecaster, save_forecaster
from greentune.train.optim import build_optimizer
from greentune.tuning import bottleneck
from greentune.tuning.methods import (
    METHODS,
    MethodContext,
    apply_method,
    merge_adapter,
    save_with_adapter,
)
from tests.unit.test_models import SPEC
from tests.unit.test_models import batch as series_batch

ARCHS = ["bert", "gpt2"]
CLS = MethodContext(total_steps=10, task_type="SEQ_CLS", head_modules=("classifier", "score"))
FORECAST = MethodContext(total_steps=10)
LABELS = ["a", "b", "c"]
# (peft config, architectures it trains the classifier on)
CLASSIFIER_CASES = [
    (PeftConfig(method="lora", use_dora=True), ARCHS),
    (PeftConfig(method="lora", use_rslora=True), ARCHS),
    (PeftConfig(method="lora", use_dora=True, use_rslora=True), ARCHS),
    (PeftConfig(method="prompt", virtual_tokens=4), ARCHS),
    (PeftConfig(method="prefix", virtual_tokens=4), ARCHS),
    (PeftConfig(method="adapter", adapter_placement="houlsby", adapter_size=8), ARCHS),
    (PeftConfig(method="adapter", adapter_placement="pfeiffer", adapter_size=8), ARCHS),
]
CASES = [(cfg, arch) for cfg, archs in CLASSIFIER_CASES for arch in archs]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Models this small run fastest on one thread (idle workers of a busy machine otherwise
    make each tiny matmul wait)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _id(case: tuple[PeftConfig, str]) -> str:
    cfg, arch = case
    flags = [k for k in ("use_dora", "use_rslora") if getattr(cfg, k)]
    extra = cfg.adapter_placement if cfg.method == "adapter" else "+".join(flags)
    return "-".join(filter(None, [arch, cfg.method, extra]))


def tiny_classifier(arch: str, pooling: str = "mean") -> torch.nn.Module:
    """``model.pooling``'s default (mean) unless asked for transformers' own head (cls)."""
    torch.manual_seed(0)
    if arch == "bert":
        config = BertConfig(
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
    else:
        config = GPT2Config(
            vocab_size=100, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0
        )
        config.attn_pdrop, config.summary_first_dropout = 0.0, 0.0
        config.pad_token_id = 0
    config.bos_token_id = config.eos_token_id = None  # GPT-2's 50256 is outside vocab 100
    config.num_labels = len(LABELS)
    config.classifier_pooling = pooling
    return classifier_from_config(config)


def text_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (4, 9), generator=g)
    mask = torch.ones_like(ids)
    ids[0, 6:], mask[0, 6:] = 0, 0  # one padded text
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2, 1])}


def one_step(model: torch.nn.Module, loss_of) -> dict[str, torch.Tensor]:
    """The parameters before one AdamW step (the loop's own optimizer) on ``loss_of()``."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = build_optimizer(model.named_parameters(), TrainConfig(lr=1e-2))
    loss_of().backward()
    optimizer.step()
    return before


ADAPTER_NAMES = ("lora_", "prompt_encoder", ".bottleneck.")


def assert_only_adapter_moved(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and not moved & frozen  # every frozen parameter bit-identical
    assert any(a in n for n in moved for a in ADAPTER_NAMES), "the adapter did not move"


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_classifier_trains_only_its_adapter_and_round_trips(case, tmp_path):
    cfg, arch = case
    model = TextClassifier(apply_method(tiny_classifier(arch), cfg, CLS))
    b = text_batch()
    before = one_step(model, lambda: model.loss(model(b), b))
    assert_only_adapter_moved(model, before)
    save_classifier(
        model, tmp_path / "m", load_tokenizer(ModelConfig(backbone="tiny-bert")), LABELS
    )
    loaded, _, labels = load_saved_classifier(tmp_path / "m")
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(b), model(b))
    assert labels == LABELS
    if cfg.method == "lora":  # the flags reached peft, and DoRA / rsLoRA still merge
        peft_cfg = model.model.peft_config["default"]
        assert (peft_cfg.use_dora, peft_cfg.use_rslora) == (cfg.use_dora, cfg.use_rslora)
        assert loaded.model.peft_config["default"].use_dora == cfg.use_dora
        merged = TextClassifier(merge_adapter(loaded.model, tmp_path))
        torch.testing.assert_close(merged(b), model(b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer"])
def test_bottleneck_adapters_start_as_the_identity(arch, placement):
    base = tiny_classifier(arch).eval()
    b = text_batch()
    with torch.no_grad():
        expected = base(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    cfg = PeftConfig(method="adapter", adapter_placement=placement, adapter_size=8)
    model = apply_method(base, cfg, CLS)
    spec = bottleneck.describe(model)
    layers = {"houlsby": 4, "pfeiffer": 2}[placement]  # 2 layers x (attention +) feed-forward
    assert spec is not None and len(spec.modules) == layers and spec.size == 8
    projections = ("attention.output.dense", "attn.c_proj") if placement == "houlsby" else ()
    projections += (".output.dense", "mlp.c_proj")
    assert all(m.endswith(projections) and "intermediate" not in m for m in spec.modules)
    with torch.no_grad():
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    assert torch.equal(out, expected)


@pytest.mark.parametrize("backbone", ["tiny-bert", "tiny-gpt2"])
@pytest.mark.parametrize(
    "cfg",
    [
        PeftConfig(method="adapter", adapter_placement="houlsby", adapter_size=8),
        PeftConfig(method="adapter", adapter_size=8),
        PeftConfig(method="lora", use_dora=True, use_rslora=True),
    ],
    ids=["adapter-houlsby", "adapter-pfeiffer", "lora-dora-rslora"],
)
def test_forecaster_trains_only_its_adapter_and_round_trips(backbone, cfg, tmp_path):
    torch.manual_seed(0)
    base = load_backbone(ModelConfig(backbone=backbone, dropout=0.0), keep_word_embeddings=False)
    b = series_batch()
    with torch.no_grad():
        base_out = base(inputs_embeds=torch.ones(2, 6, 32)).last_hidden_state
    bb = apply_method(base, cfg, FORECAST)
    with torch.no_grad():  # adapters start as the identity, LoRA/DoRA too (B = 0)
        assert torch.equal(bb(inputs_embeds=torch.ones(2, 6, 32)).last_hidden_state, base_out)
    model = Forecaster(SPEC, bb, 32)
    torch.nn.init.normal_(model.head.weight, std=0.1)  # a zero head sends the backbone nothing
    before = one_step(model, lambda: model.loss(model(b), b))
    assert_only_adapter_moved(model, before)
    save_forecaster(model, tmp_path / "model")
    loaded = load_forecaster(tmp_path / "model")
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(b), model(b))


@pytest.mark.parametrize("arch", ARCHS)
def test_bottleneck_layout_loads_without_the_adapters(arch, tmp_path):
    """backbone/ is a plain Hugging Face folder; adapter/ holds only the adapters."""
    cfg = PeftConfig(method="adapter", adapter_placement="houlsby", adapter_size=8)
    model = TextClassifier(apply_method(tiny_classifier(arch), cfg, CLS))
    save_classifier(
        model, tmp_path / "m", load_tokenizer(ModelConfig(backbone="tiny-bert")), LABELS
    )
    spec = json.loads((tmp_path / "m" / "adapter" / bottleneck.SPEC_FILE).read_text())
    assert (spec["placement"], spec["size"], spec["hidden"]) == ("houlsby", 8, 32)
    assert spec["activation"] == "gelu" and len(spec["modules"]) == 4
    tensors = load_file(str(tmp_path / "m" / "adapter" / bottleneck.WEIGHTS_FILE))
    assert len(tensors) == 4 * 4 and all(".bottleneck." in k for k in tensors)
    saved = load_file(str(tmp_path / "m" / "backbone" / "model.safetensors"))
    assert not [k for k in saved if "bottleneck" in k]
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m" / "backbone")
    assert bottleneck.describe(plain) is None
    assert bottleneck.describe(model.model) is not None  # saving stripped a copy only


def test_a_bare_backbone_keeps_its_parameter_names(tmp_path):
    base = load_backbone(ModelConfig(backbone="tiny-bert"), keep_word_embeddings=False)
    names = {n for n, _ in base.named_parameters()}
    adapted = apply_method(base, PeftConfig(method="adapter", adapter_size=8), FORECAST)
    new = {n for n, _ in adapted.named_parameters()} - names
    assert new and all(".output.dense.bottleneck." in n for n in new)
    stripped = bottleneck.strip(adapted)
    assert {n for n, _ in stripped.named_parameters()} == names
    stripped.save_pretrained(tmp_path / "bb")
    AutoModel.from_pretrained(tmp_path / "bb", add_pooling_layer=False)


def test_merge_keeps_bottleneck_adapters_and_refuses_prompt_tuning(tmp_path):
    adapted = apply_method(tiny_classifier("bert"), PeftConfig(method="adapter"), CLS)
    assert merge_adapter(adapted, tmp_path) is adapted  # nonlinear: they run unmerged
    prompted = apply_method(tiny_classifier("bert"), PeftConfig(method="prompt"), CLS)
    with pytest.raises(ConfigError, match="cannot be merged.*prompt/prefix.*adapter"):
        merge_adapter(prompted, tmp_path)


def test_int8_dynamic_refuses_bottleneck_adapters(tmp_path):
    """quantize_dynamic swaps the adapted projections: BERT's would lose their adapters."""
    from types import SimpleNamespace

    from greentune.compress.methods import _quantize_inner
    from greentune.errors import CompressError

    model = TextClassifier(apply_method(tiny_classifier("bert"), PeftConfig(method="adapter"), CLS))
    task = SimpleNamespace(
        run=SimpleNamespace(path=tmp_path), inner_attr="model", inner=lambda m: m.model
    )
    with pytest.raises(CompressError, match="peft.method=adapter.*use onnx or onnx-int8"):
        _quantize_inner(task, model)


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_the_forecaster_refuses_virtual_tokens(method):
    base = load_backbone(ModelConfig(backbone="tiny-bert"), keep_word_embeddings=False)
    with pytest.raises(ConfigError, match="head reads every token position.*peft.method=lora"):
        apply_method(base, PeftConfig(method=method), FORECAST)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_tuning_reads_its_prefix_and_not_the_batch(arch, pooling, tmp_path):
    """peft 0.21 passes the prefix as ``past_key_values``, which transformers 5 calls ``cache``;
    the shim hands it on, the mask covers the virtual tokens (and the mean pools only the
    text's own states), and saving leaves no shim."""
    prefix = PeftConfig(method="prefix", virtual_tokens=4)
    model = TextClassifier(apply_method(tiny_classifier(arch, pooling), prefix, CLS)).eval()
    b = text_batch()
    with torch.no_grad():
        out = model(b)
        for i, n in enumerate(b["attention_mask"].sum(1).tolist()):  # each text alone, unpadded
            alone = {k: b[k][i : i + 1, :n] for k in ("input_ids", "attention_mask")}
            torch.testing.assert_close(model(alone)[0], out[i], rtol=0, atol=1e-6)
        prefix = model.model.prompt_encoder["default"].embedding.weight
        prefix.add_(torch.randn_like(prefix))
        assert not torch.allclose(model(b), out)  # every layer attends to the prefix
    base = save_with_adapter(model.model, tmp_path)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["num_virtual_tokens"]) == ("PREFIX_TUNING", 4)
    assert "forward" not in vars(base)  # the saved base is a plain transformers model
    assert "forward" in vars(model.model.get_base_model())  # saving unshimmed a copy only
    AutoModelForSequenceClassification.from_pretrained(tmp_path / "backbone")


def test_prefix_tuning_is_refused_where_no_forward_takes_the_prefix():
    """DistilBERT's forward takes neither ``past_key_values`` nor ``cache``."""
    from transformers import DistilBertConfig

    config = DistilBertConfig(vocab_size=100, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    model = AutoModelForSequenceClassification.from_config(config)
    with pytest.raises(ConfigError, match="past_key_values.*cache.*neither.*peft.method=lora"):
        apply_method(model, PeftConfig(method="prefix"), CLS)


def test_prompt_tuning_is_refused_for_last_token_classifiers():
    with pytest.raises(ConfigError, match="pooling=cls: it classifies from the last real token"
                       ".*use model.pooling=mean, peft.method=lora or adapter"):  # fmt: skip
        apply_method(tiny_classifier("gpt2", "cls"), PeftConfig(method="prompt"), CLS)


def test_prompt_tuning_a_mean_pooled_decoder_reads_the_text_not_its_batch():
    """Under model.pooling=mean GPT-2 reads the mean over the mask (prompt included), so the
    padding a batch adds changes nothing."""
    prompt = PeftConfig(method="prompt", virtual_tokens=4)
    model = TextClassifier(apply_method(tiny_classifier("gpt2"), prompt, CLS)).eval()
    b = text_batch()
    with torch.no_grad():
        out = model(b)
        for i, n in enumerate(b["attention_mask"].sum(1).tolist()):
            alone = {k: b[k][i : i + 1, :n] for k in ("input_ids", "attention_mask")}
            torch.testing.assert_close(model(alone)[0], out[i], rtol=0, atol=1e-6)


def test_adapter_is_refused_for_unknown_architectures():
    from transformers import RobertaConfig

    config = RobertaConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    with pytest.raises(ConfigError, match="not of roberta; use peft.method=lora"):
        apply_method(AutoModel.from_config(config), PeftConfig(method="adapter"), FORECAST)


def test_peft_config_checks_the_new_keys():
    with pytest.raises(ConfigError, match="peft.use_dora applies to peft.method=lora only"):
        build_config(overrides=["peft.method=adalora", "peft.use_dora=true"])
    with pytest.raises(ConfigError, match="peft.use_rslora applies to peft.method=lora only"):
        PeftConfig(method="adapter", use_rslora=True)
    with pytest.raises(ConfigError, match=r"peft\.virtual_tokens must be >= 1, got 0"):
        build_config(overrides=["peft.method=prompt", "peft.virtual_tokens=0"])
    with pytest.raises(ConfigError, match=r"peft\.adapter_size must be >= 1"):
        build_config(overrides=["peft.adapter_size=0"])
    with pytest.raises(ConfigError, match="valid choices: houlsby, pfeiffer"):
        build_config(overrides=["peft.adapter_placement=parallel"])
    cfg = build_config(overrides=["peft.use_dora=true", "peft.use_rslora=true"]).peft
    assert (cfg.method, cfg.use_dora, cfg.use_rslora) == ("lora", True, True)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", METHODS.names())
def test_every_registered_method_trains_the_classifier_or_says_why_not(method, arch):
    refused: set[tuple[str, str]] = set()  # prompt on GPT-2: refused under pooling=cls only
    model = tiny_classifier(arch)
    if (method, arch) in refused:
        with pytest.raises(ConfigError, match="use peft.method=lora"):
            apply_method(model, PeftConfig(method=method), CLS)
        return
    model = TextClassifier(apply_method(model, PeftConfig(method=method), CLS))
    b = text_batch()
    model.loss(model(b), b).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
