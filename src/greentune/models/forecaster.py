"""The forecasting network: encoder -> pretrained backbone -> head (+ a linear skip path).

Saved layout (``model/``), loadable with transformers + peft + safetensors alone:

    model/greentune_model.json   # ForecasterSpec: sizes, quantiles, encoder kind
    model/backbone/              # AutoModel.from_pretrained(...) — base weights (vocab_size 1
                                 #   for the patch encoder: the word embeddings are not used)
    model/adapter/               # PeftModel.from_pretrained(backbone, ...) when a PEFT method ran
                                 #   (bottleneck.json + .safetensors: peft.method=adapter)
    model/heads.safetensors      # encoder.*, head.*, skip.* tensors
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel

from greentune.errors import ModelError
from greentune.models.backbone import pool
from greentune.models.encoders import PatchEncoder, window_norm
from greentune.tuning.methods import load_adapter, save_with_adapter

SPEC_FILE = "greentune_model.json"


@dataclass(frozen=True)
class ForecasterSpec:
    encoder: str
    n_channels: int
    n_known: int
    n_targets: int
    context_length: int
    horizon: int
    patch_len: int
    quantiles: tuple[float, ...]
    linear_skip: bool
    pooling: str
    channel_independent: bool = False
    """Fold targets into the batch: one shared univariate network per target channel."""
    patch_stride: int | None = None
    """Steps between context patches; None: patch_len (no overlap)."""
    revin: bool = False
    """Per-window normalisation of the targets the encoder sees; the head's correction is
    scaled back by the window's std (the skip path keeps the level)."""
    base: str | None = None
    """'lightgbm': the output adds each window's base forecast (``batch['base']``, (B, H, T)
    scaled) and a trainable bias per output instead of a linear skip path (a hybrid)."""

    @property
    def n_quantiles(self) -> int:
        return max(1, len(self.quantiles))

    @property
    def series_targets(self) -> int:
        """Targets one forward row predicts: 1 when channel-independent."""
        return 1 if self.channel_independent else self.n_targets

    @property
    def series_channels(self) -> int:
        """Past channels one forward row sees: its own target + the covariates when folded."""
        return 1 + self.n_channels - self.n_targets if self.channel_independent else self.n_channels

    @property
    def n_out(self) -> int:
        return self.horizon * self.series_targets * self.n_quantiles


class Forecaster(nn.Module):
    """Maps a batch dict to (B, horizon, targets, quantiles) in scaled units."""

    def __init__(self, spec: ForecasterSpec, backbone: nn.Module, hidden: int) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        if spec.encoder == "patch":
            self.encoder: PatchEncoder | None = PatchEncoder(
                spec.series_channels,
                spec.n_known,
                spec.context_length,
                spec.horizon,
                spec.patch_len,
                hidden,
                spec.patch_stride,
            )
            head_in = self.encoder.n_tokens * hidden
        else:
            self.encoder = None
            head_in = hidden
        self.head = nn.Linear(head_in, spec.n_out)
        # Zero head: training starts from the linear skip path and the backbone's contribution
        # grows from there (as LoRA's zero B matrix does), which made early epochs stable.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        skip_in = spec.context_length * spec.series_channels + spec.horizon * spec.n_known
        self.skip = nn.Linear(skip_in, spec.n_out) if spec.linear_skip and not spec.base else None
        # the base's per-output offset (quantile offsets at start), trained like the skip bias
        self.base_bias = nn.Parameter(torch.zeros(spec.n_out)) if spec.base else None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        past, future = batch["past"], batch["future"]
        s = self.spec
        if s.channel_independent:  # same row order as greentune.data.windows.fold_channels
            t = s.n_targets
            own = past[..., :t].transpose(1, 2).reshape(-1, past.shape[1], 1)
            past = torch.cat([own, past[..., t:].repeat_interleave(t, dim=0)], dim=-1)
            future = future.repeat_interleave(t, dim=0)
        scale = None
        if self.encoder is not None:
            seen = past
            if s.revin:
                seen, scale = window_norm(past, s.series_targets)
            embeds = self.encoder(seen, future)
            states = self.backbone(inputs_embeds=embeds).last_hidden_state
            features = states.flatten(1)
        else:
            mask = batch["attention_mask"]
            states = self.backbone(
                input_ids=batch["input_ids"], attention_mask=mask
            ).last_hidden_state
            features = pool(states, mask, self.spec.pooling)
        out = self.head(features)
        if scale is not None:  # (B, 1, T) -> each target's outputs times its window's std
            rows = out.view(-1, s.horizon, s.series_targets, s.n_quantiles)
            out = (rows * scale.view(-1, 1, s.series_targets, 1)).flatten(1)
        if self.skip is not None:
            out = out + self.skip(torch.cat([past.flatten(1), future.flatten(1)], dim=1))
        if self.base_bias is not None:
            if "base" not in batch:
                raise ModelError(
                    f"this model adds a {s.base} base forecast to its output, and the batch "
                    "carries none: load it with greentune's Predictor, which computes it"
                )
            base = batch["base"].unsqueeze(-1).expand(-1, -1, -1, s.n_quantiles)
            out = out + base.flatten(1).to(out.dtype) + self.base_bias
        if s.channel_independent:  # (B*T, H*Q) -> (B, H, T, Q)
            return out.view(-1, s.n_targets, s.horizon, s.n_quantiles).transpose(1, 2)
        return out.view(-1, s.horizon, s.n_targets, s.n_quantiles)

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        y = batch["y"].unsqueeze(-1)
        if not self.spec.quantiles:
            return ((out - y) ** 2).mean()
        q = torch.tensor(self.spec.quantiles, dtype=out.dtype, device=out.device)
        diff = y - out
        return torch.maximum(q * diff, (q - 1) * diff).mean()


def save_forecaster(model: Forecaster, directory: Path, tokenizer: Any = None) -> None:
    """Write the layout above into ``directory`` (which the caller renames into place)."""
    directory.mkdir(parents=True, exist_ok=True)
    base = save_with_adapter(model.backbone, directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory / "backbone")
    tensors = {
        k: v.detach().contiguous().cpu()
        for k, v in model.state_dict().items()
        if not k.startswith("backbone.")
    }
    save_file(tensors, str(directory / "heads.safetensors"))
    spec = {**asdict(model.spec), "hidden": int(base.config.hidden_size)}
    (directory / SPEC_FILE).write_text(json.dumps(spec, indent=2))


def load_forecaster(directory: Path) -> Forecaster:
    spec_path = directory / SPEC_FILE
    if not spec_path.is_file():
        raise ModelError(f"{directory}: no {SPEC_FILE}; is this a greentune forecasting model?")
    raw = json.loads(spec_path.read_text())
    hidden = raw.pop("hidden")
    raw["quantiles"] = tuple(raw["quantiles"])
    spec = ForecasterSpec(**raw)
    config = AutoConfig.from_pretrained(directory / "backbone", local_files_only=True)
    kwargs = {"add_pooling_layer": False} if config.model_type == "bert" else {}
    backbone: Any = AutoModel.from_pretrained(
        directory / "backbone", local_files_only=True, **kwargs
    )
    backbone = load_adapter(backbone, directory / "adapter")
    model = Forecaster(spec, backbone, hidden)
    missing, unexpected = model.load_state_dict(
        load_file(str(directory / "heads.safetensors")), strict=False
    )
    bad = [k for k in missing if not k.startswith("backbone.")] + list(unexpected)
    if bad:
        raise ModelError(f"{directory}/heads.safetensors does not match the spec: {bad[:5]}")
    return model.eval()
