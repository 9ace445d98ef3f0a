"""Sequence classification on the same backbones: transformers' own *ForSequenceClassification.

Pooling (``model.pooling``): ``cls`` is transformers' own head (BERT's [CLS] pooler, GPT-2's
last token); ``mean`` (the default) averages the token states the attention mask keeps and
feeds the mean to the same linear head. all-MiniLM-L6-v2 was trained to be read by its mean:
a linear probe of the frozen model on 1,213 SST-2 phrases reads 76.6 % dev accuracy from it,
67.7 % from [CLS] and 68.5 % from BERT's pooler, which that checkpoint never trained
(``benchmarks/pooling.py``). The mean-pooled
model is the same transformers class under a subclass (``MeanPooled<Class>``) that drops the
unused pooler and records ``classifier_pooling: mean`` in its config, which
``load_saved_classifier`` reads back; plain transformers would load it with its own pooling.

Saved layout (``model/``): ``backbone/`` (AutoModelForSequenceClassification + tokenizer),
``adapter/`` (PeftModel, or bottleneck adapters) when a PEFT method ran, ``labels.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from transformers import (
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from greentune.config import ModelConfig
from greentune.errors import ConfigError, ModelError
from greentune.models.backbone import backbone_config, pool
from greentune.tuning.methods import load_adapter, save_with_adapter


class TextClassifier(nn.Module):
    """Adapts an HF classifier to the loop's interface: forward(batch) -> logits, loss."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(out.float(), batch["labels"])


POOLING_KEY = "classifier_pooling"
"""The config attribute that records a mean-pooled head (ModernBERT's name for the same
choice); absent on classifiers saved before it existed, which are [CLS]-pooled."""


class MeanPooledHead:
    """Mixin before a transformers *ForSequenceClassification class: its backbone's token
    states, averaged over the attention mask, through the class's own linear head (BERT's
    dropout + ``classifier``, or a decoder's ``score``)."""

    def __init__(self, config: PretrainedConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)  # type: ignore[call-arg]
        # Only the backbone, one linear head and its dropout: anything else (DeBERTa's
        # ContextPooler, ModernBERT's dense + norm head, DistilBERT's pre_classifier) would be
        # left untrained by a mean read straight into the head.
        children = {name for name, _ in self.named_children()}  # type: ignore[attr-defined]
        head = "classifier" if "classifier" in children else "score"
        expected = {self.base_model_prefix, head} | ({"dropout"} & children)  # type: ignore[attr-defined]
        if not isinstance(getattr(self, head, None), nn.Linear) or children != expected:
            raise ConfigError(
                f"model.pooling=mean: {type(self).__mro__[2].__name__} has no single linear "
                "head to read a mean with; set model.pooling=cls to keep its own head"
            )
        base = self.base_model  # type: ignore[attr-defined]
        if getattr(base, "pooler", None) is not None:
            base.pooler = None  # unused: its weights would get no gradient (and stall DDP)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        kwargs.pop("return_dict", None)
        out = self.base_model(  # type: ignore[attr-defined]
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
            **kwargs,
        )  # fmt: skip
        states = out[0]
        if attention_mask is None:
            mask = torch.ones(states.shape[:2], device=states.device)
        else:
            # prefix tuning's mask also covers its virtual tokens, which have no states here
            mask = attention_mask[:, -states.shape[1] :]
        pooled = pool(states, mask, "mean")
        head = getattr(self, "classifier", None)
        if head is None:
            logits = self.score(pooled)  # type: ignore[attr-defined]
        else:
            dropout = getattr(self, "dropout", None)
            logits = head(pooled if dropout is None else dropout(pooled))
        loss = None if labels is None else nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


PREFIX = "MeanPooled"


def _mean_pooled_class(base: type[PreTrainedModel]) -> type[PreTrainedModel]:
    """``MeanPooled<base>``, made once per class and kept in this module."""
    name = f"{PREFIX}{base.__name__}"
    cls = globals().get(name)
    if cls is None:
        cls = type(name, (MeanPooledHead, base), {"__module__": __name__})
        globals()[name] = cls
    return cls


def __getattr__(name: str) -> type[PreTrainedModel]:
    """``MeanPooled<Class>`` on first use, so that a pickled model loads in a fresh process."""
    if name.startswith(PREFIX):
        import transformers

        base = getattr(transformers, name[len(PREFIX) :], None)
        if isinstance(base, type) and issubclass(base, PreTrainedModel):
            return _mean_pooled_class(base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def classifier_class(config: PretrainedConfig) -> type[PreTrainedModel]:
    """The class that builds a classifier for ``config``, pooled as it records."""
    try:
        found = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]
    except KeyError:
        raise ModelError(
            f"{config.model_type}: transformers has no sequence classifier for this "
            "architecture; use a BERT-style or decoder backbone (model.backbone)"
        ) from None
    base = cast(type[PreTrainedModel], found)
    if getattr(config, POOLING_KEY, "cls") != "mean" or _pools_itself(config):
        return base
    return _mean_pooled_class(base)


def _pools_itself(config: PretrainedConfig) -> bool:
    """Architectures whose own config has ``classifier_pooling`` (ModernBERT) pool by it."""
    return hasattr(type(config)(), POOLING_KEY)


def load_classifier(cfg: ModelConfig, label_names: list[str], pad_token_id: int) -> nn.Module:
    config, weights = backbone_config(cfg)
    config.num_labels = len(label_names)
    config.id2label = dict(enumerate(label_names))
    config.label2id = {n: i for i, n in enumerate(label_names)}
    if config.pad_token_id is None:
        config.pad_token_id = pad_token_id
    setattr(config, POOLING_KEY, cfg.pooling)
    if cfg.pretrained and weights is not None:
        local = Path(weights).exists()
        return classifier_class(config).from_pretrained(
            weights, config=config, local_files_only=local
        )
    return classifier_from_config(config)


def classifier_from_config(config: PretrainedConfig) -> PreTrainedModel:
    """An untrained classifier of ``config``'s shape and pooling (also the skeleton a saved
    int8 variant loads into)."""
    cls = classifier_class(config)
    if issubclass(cls, MeanPooledHead):
        return cls(config)
    return AutoModelForSequenceClassification.from_config(config)


def save_classifier(
    model: TextClassifier, directory: Path, tokenizer: Any, labels: list[str]
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_with_adapter(model.model, directory)
    tokenizer.save_pretrained(directory / "backbone")
    (directory / "labels.json").write_text(json.dumps(labels))


def load_saved_classifier(directory: Path) -> tuple[TextClassifier, Any, list[str]]:
    from transformers import AutoTokenizer

    if not (directory / "labels.json").is_file():
        raise ModelError(f"{directory}: no labels.json; is this a greentune classifier?")
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(directory / "backbone", local_files_only=True)
    model = classifier_class(config).from_pretrained(
        directory / "backbone", config=config, local_files_only=True
    )
    model = load_adapter(model, directory / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(directory / "backbone", local_files_only=True)
    labels = json.loads((directory / "labels.json").read_text())
    return TextClassifier(model).eval(), tokenizer, labels
