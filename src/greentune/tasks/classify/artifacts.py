"""A classification run's ``model/`` folder: ``backbone/`` (transformers classifier and
tokenizer), ``adapter/`` when a PEFT method ran, ``labels.json``; a compressed variant adds
``variant.json`` (models/variants.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from greentune.io import staged_dir
from greentune.models.classifier import TextClassifier, load_saved_classifier, save_classifier
from greentune.models.variants import load_classify_variant, read_variant
from greentune.tasks.members import require_model_dir


def save_model(model: TextClassifier, tokenizer: Any, labels: list[str], model_dir: Path) -> None:
    """Write ``model_dir`` as a whole: a crash leaves the previous folder (or none)."""
    with staged_dir(model_dir) as tmp:
        save_classifier(model, tmp, tokenizer, labels)


def load_model(run_path: Path) -> tuple[Any, Any, list[str]]:
    """(classifier, tokenizer, label names) of a run, or of the compressed variant it holds."""
    model_dir = require_model_dir(run_path)
    if read_variant(model_dir)["format"] != "torch":
        return load_classify_variant(model_dir)
    return load_saved_classifier(model_dir)
