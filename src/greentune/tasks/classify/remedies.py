"""The classifier's remedies against overfitting: text augmentation (EDA), adversarial
training on the token embeddings, label smoothing and R-Drop (``augment``, ``regularize``)."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from greentune.augment.callback import Augmentation
from greentune.augment.text import Lexicon, augment_texts, load_wordnet
from greentune.config import SERIES_AUGMENTS, TEXT_AUGMENTS, AugmentConfig, RunConfig
from greentune.data.text import pad_tokens
from greentune.errors import ConfigError
from greentune.tasks.classify.batches import TextBatches
from greentune.train.callbacks import Callback
from greentune.train.regularize import regularizers, task_augments


def classify_remedies(cfg: RunConfig) -> list[Callback]:
    aug = cfg.augment
    text = task_augments(cfg, "classify", TEXT_AUGMENTS, SERIES_AUGMENTS, ("series", "text"))
    out: list[Callback] = []
    if text:
        lexicon = load_wordnet() if {"synonym", "insertion"} & set(text) else None
        out.append(Augmentation(partial(_augment, aug, lexicon), cfg.seed, aug.settings(text)))
    return [*out, *regularizers(cfg.regularize, classifier=True, dropout=cfg.model.dropout)]


def _augment(
    cfg: AugmentConfig,
    lexicon: Lexicon | None,
    batches: TextBatches,
    idx: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, torch.Tensor]:
    if batches.texts is None or batches.encode is None:
        raise ConfigError("augment: these training batches keep no texts to augment")
    texts = augment_texts([batches.texts[i] for i in idx], cfg, rng, lexicon)
    batch = pad_tokens(batches.encode(texts), batches.pad_id)
    batch["labels"] = torch.from_numpy(batches.labels[idx])
    return batch
