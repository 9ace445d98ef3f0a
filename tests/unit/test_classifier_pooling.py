"""``model.pooling`` for classifiers: the mean-pooled head on transformers' own classes.

Tiny random BERT and GPT-2 (hidden 32, 2 layers): the logits are the linear head of the
masked mean of the last token states, exactly; padding changes nothing; the pooled class,
its config and its outputs survive save -> load (and an int8 skeleton); [CLS] models and
classifiers saved before the option load as they were; heads that cannot read a mean are
refused with the setting to use.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from greentune.config import ModelConfig
from greentune.errors import ConfigError
from greentune.models.backbone import load_tokenizer
from greentune.models.classifier import (
    POOLING_KEY,
    TextClassifier,
    classifier_from_config,
    load_classifier,
    load_saved_classifier,
    save_classifier,
)
from tests.unit.test_peft_methods import LABELS, text_batch, tiny_classifier

ARCHS = ["bert", "gpt2"]


def _head(model: torch.nn.Module) -> torch.nn.Linear:
    return model.classifier if hasattr(model, "classifier") else model.score


@pytest.mark.parametrize("arch", ARCHS)
def test_mean_pooled_logits_are_the_head_of_the_masked_mean(arch):
    model = tiny_classifier(arch, "mean").eval()
    b = text_batch()
    with torch.no_grad():
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        states = model.base_model(
            input_ids=b["input_ids"], attention_mask=b["attention_mask"]
        ).last_hidden_state
        n = b["attention_mask"].sum(1)
        means = torch.stack([states[i, : n[i]].mean(0) for i in range(len(n))])
        torch.testing.assert_close(logits, _head(model)(means), rtol=0, atol=1e-6)
        # the padded text (6 of 9 tokens) alone and unpadded: the same logits
        alone = model(input_ids=b["input_ids"][:1, :6], attention_mask=b["attention_mask"][:1, :6])
        torch.testing.assert_close(alone.logits[0], logits[0], rtol=0, atol=1e-6)
        cls = tiny_classifier(arch, "cls").eval()
        plain = cls(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    assert not torch.allclose(plain, logits)  # same weights, another reading
    assert type(model).__name__ == f"MeanPooled{type(cls).__name__}"
    assert isinstance(model, type(cls))


def test_the_unused_pooler_is_dropped_and_every_parameter_learns():
    model = tiny_classifier("bert", "mean")
    assert model.bert.pooler is None
    assert not any("pooler" in n for n, _ in model.named_parameters())
    assert tiny_classifier("bert", "cls").bert.pooler is not None
    b = text_batch()
    TextClassifier(model).loss(TextClassifier(model)(b), b).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []  # what DDP needs without find_unused_parameters


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("arch", ARCHS)
def test_pooling_survives_save_and_load(arch, pooling, tmp_path):
    model = TextClassifier(tiny_classifier(arch, pooling)).eval()
    tokenizer = load_tokenizer(ModelConfig(backbone="tiny-bert"))
    save_classifier(model, tmp_path / "m", tokenizer, LABELS)
    loaded, _, labels = load_saved_classifier(tmp_path / "m")
    assert labels == LABELS
    b = text_batch()
    with torch.no_grad():
        assert torch.equal(loaded(b), model(b))
    assert type(loaded.model) is type(model.model)
    assert getattr(loaded.model.config, POOLING_KEY) == pooling
    skeleton = classifier_from_config(loaded.model.config)  # what an int8 variant loads into
    assert type(skeleton) is type(model.model)


def test_a_classifier_saved_before_the_option_loads_with_its_cls_head(tmp_path):
    old = tiny_classifier("bert", "cls")
    del old.config.classifier_pooling  # what earlier versions wrote
    old.save_pretrained(tmp_path / "m" / "backbone")
    load_tokenizer(ModelConfig(backbone="tiny-bert")).save_pretrained(tmp_path / "m" / "backbone")
    (tmp_path / "m" / "labels.json").write_text('["a", "b", "c"]')
    loaded, _, _ = load_saved_classifier(tmp_path / "m")
    plain = AutoModelForSequenceClassification.from_config(old.config)
    assert type(loaded.model) is type(plain)
    assert loaded.model.bert.pooler is not None


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_load_classifier_follows_model_pooling(pooling):
    cfg = ModelConfig(backbone="tiny-bert", pretrained=False, pooling=pooling)
    model = load_classifier(cfg, LABELS, pad_token_id=0)
    assert getattr(model.config, POOLING_KEY) == pooling
    assert (type(model).__name__ == "MeanPooledBertForSequenceClassification") == (
        pooling == "mean"
    )


def test_heads_that_cannot_read_a_mean_are_refused():
    """A head with more than one linear layer (RoBERTa's, DistilBERT's pre_classifier,
    DeBERTa's ContextPooler) would keep untrained parts under a mean read into its last."""
    from transformers import DebertaV2Config, DistilBertConfig, RobertaConfig

    distil = DistilBertConfig(vocab_size=100, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    small = {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 1,
             "num_attention_heads": 2, "intermediate_size": 64}  # fmt: skip
    cases = (
        (distil, "DistilBert"),
        (RobertaConfig(**small), "Roberta"),
        (DebertaV2Config(**small), "DebertaV2"),
    )
    for config, name in cases:
        config.classifier_pooling = "mean"
        with pytest.raises(ConfigError, match=f"model.pooling=mean: {name}ForSequence.*"
                           "no single linear head.*set model.pooling=cls"):  # fmt: skip
            classifier_from_config(config)
        config.classifier_pooling = "cls"
        classifier_from_config(config)  # their own heads still build


def test_the_packaged_minilm_classifier_keeps_its_weights_and_reads_them_by_the_mean():
    """The real all-MiniLM-L6-v2: every trained encoder weight loads unchanged, its untrained
    pooler is left out, and the mean is the pooling its own sentence-transformers config
    names."""
    import json

    from safetensors.torch import load_file

    from greentune.models.backbone import minilm_path

    model = load_classifier(ModelConfig(), ["negative", "positive"], pad_token_id=0)
    state = model.state_dict()
    packaged = load_file(str(minilm_path() / "model.safetensors"))
    for name, tensor in packaged.items():
        if name.startswith("pooler."):
            assert f"bert.{name}" not in state
        elif name != "embeddings.position_ids":
            assert torch.equal(state[f"bert.{name}"], tensor), name
    assert sorted(n for n in state if not n.startswith("bert.")) == [
        "classifier.bias",
        "classifier.weight",
    ]
    st_pooling = json.loads((minilm_path() / "1_Pooling" / "config.json").read_text())
    assert st_pooling["pooling_mode_mean_tokens"] and not st_pooling["pooling_mode_cls_token"]


def test_an_architecture_that_pools_by_its_own_config_keeps_its_head():
    """ModernBERT reads ``classifier_pooling`` itself (and its head is dense + norm + linear)."""
    from transformers import ModernBertConfig

    ids = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "cls_token_id": 1,
           "sep_token_id": 2}  # fmt: skip
    config = ModernBertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                              num_attention_heads=2, intermediate_size=64, **ids)  # fmt: skip
    config.classifier_pooling = "mean"
    model = classifier_from_config(config)
    assert type(model).__name__ == "ModernBertForSequenceClassification"
    assert model.config.classifier_pooling == "mean"


def test_a_backbone_without_a_sequence_classifier_is_one_clear_error():
    from transformers import CLIPVisionConfig

    from greentune.errors import ModelError

    with pytest.raises(ModelError, match="clip_vision_model: transformers has no sequence "
                       "classifier.*model.backbone"):  # fmt: skip
        classifier_from_config(CLIPVisionConfig())


def test_a_pickled_mean_pooled_model_loads_where_its_class_was_never_made():
    import pickle

    import greentune.models.classifier as module

    model = tiny_classifier("bert", "mean").eval()
    data = pickle.dumps(model)
    name = type(model).__name__
    made = vars(module).pop(name)  # as in a fresh process
    try:
        loaded = pickle.loads(data)
        assert type(loaded).__name__ == name and type(loaded) is not made
        b = text_batch()
        with torch.no_grad():
            args = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
            assert torch.equal(loaded(**args).logits, model(**args).logits)
    finally:
        vars(module)[name] = made
