"""The forecasting network of a run: backbone + PEFT method + encoder + head + skip path."""

from __future__ import annotations

from typing import Any

import torch

from greentune.config import RunConfig
from greentune.data.shape import default_patch_len
from greentune.data.windows import ForecastData
from greentune.models.backbone import (
    backbone_config,
    load_backbone,
    load_tokenizer,
    seed_everything,
)
from greentune.models.forecaster import Forecaster, ForecasterSpec
from greentune.tasks.forecast.hybrid import HybridBase
from greentune.tasks.forecast.skip import SkipInit, init_skip
from greentune.tuning.methods import MethodContext, apply_method


def build_model(
    cfg: RunConfig,
    data: ForecastData,
    total_steps: int,
    skip: SkipInit | None = None,
    hybrid: HybridBase | None = None,
) -> tuple[Forecaster, Any]:
    """(network, tokenizer or None): seeded, the PEFT method applied, the skip path at the
    ridge fit when ``skip`` is given, or LightGBM's base with its offsets when ``hybrid`` is."""
    m = cfg.model
    seed_everything(cfg.seed)
    text = m.encoder == "text"
    base = load_backbone(m, keep_word_embeddings=text)
    backbone = apply_method(base, cfg.peft, MethodContext(total_steps=total_steps))
    if not text:  # the one-row word embedding is never used: a trainable unused parameter
        base.get_input_embeddings().weight.requires_grad_(False)  # breaks DDP (method full)
    spec = ForecasterSpec(
        encoder=m.encoder,
        n_channels=len(data.columns),
        n_known=len(data.known_cols),
        n_targets=data.n_targets,
        context_length=data.context_length,
        horizon=data.horizon,
        patch_len=m.patch_len or default_patch_len(data.step, data.context_length),
        quantiles=m.quantiles,
        linear_skip=m.linear_skip,
        pooling=m.pooling,
        channel_independent=data.channel_independent,
        patch_stride=m.patch_stride,
        revin=m.revin,
        base="lightgbm" if m.skip_init == "lightgbm" and m.linear_skip else None,
    )
    model = Forecaster(spec, backbone, int(base.config.hidden_size))
    if skip is not None and model.skip is not None:
        init_skip(model.skip, skip)
    if hybrid is not None and model.base_bias is not None:
        with torch.no_grad():  # output order (h, t, q): the offsets are (q, h*t)
            offsets = torch.from_numpy(hybrid.offsets.T.reshape(-1)).to(model.base_bias.dtype)
            model.base_bias.copy_(offsets)
    return model, (load_tokenizer(m) if text else None)


def weights_word(cfg: RunConfig) -> str:
    """How the log line describes the backbone's weights."""
    if not cfg.model.pretrained:
        return "random init"
    return "pretrained" if backbone_config(cfg.model)[1] else "random init: no pretrained weights"
