"""Sequence classification on the same backbones: transformers' own *ForSequenceClassification.

Saved layout (``model/``): ``backbone/`` (AutoModelForSequenceClassification + tokenizer),
``adapter/`` (PeftModel, or bottleneck adapters) when a PEFT method ran, ``labels.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from greentune.config import ModelConfig
from greentune.errors import ModelError
from greentune.models.backbone import backbone_config
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


def load_classifier(cfg: ModelConfig, label_names: list[str], pad_token_id: int) -> nn.Module:
    config, weights = backbone_config(cfg)
    config.num_labels = len(label_names)
    config.id2label = dict(enumerate(label_names))
    config.label2id = {n: i for i, n in enumerate(label_names)}
    if config.pad_token_id is None:
        config.pad_token_id = pad_token_id
    if cfg.pretrained and weights is not None:
        local = Path(weights).exists()
        return AutoModelForSequenceClassification.from_pretrained(
            weights, config=config, local_files_only=local
        )
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
    model = AutoModelForSequenceClassification.from_pretrained(
        directory / "backbone", local_files_only=True
    )
    model = load_adapter(model, directory / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(directory / "backbone", local_files_only=True)
    labels = json.loads((directory / "labels.json").read_text())
    return TextClassifier(model).eval(), tokenizer, labels
