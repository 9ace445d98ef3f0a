"""Bottleneck adapters (Houlsby et al. 2019, Pfeiffer et al. 2021): x + up(act(down(x))).

The maintained ``adapters`` library pins transformers 4.x, so this is a small own version.
Each adapter is a child module ``bottleneck`` of the projection it follows, run by a forward
hook on that projection (a module-level function that looks the child up at call time). So
the backbone's own parameter names do not change, a deepcopy carries its own adapters, and
deleting the children (``strip``) leaves a plain Hugging Face model whose hooks do nothing.

Saved as ``adapter/bottleneck.json`` (``BottleneckSpec``) + ``adapter/bottleneck.safetensors``
(the adapter tensors, named as in the adapted model's state dict) beside a ``backbone/``
saved without them.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from greentune.config import PeftConfig
from greentune.errors import ConfigError, ModelError
from greentune.tuning.base import METHODS, MethodContext, train_only

CHILD = "bottleneck"
SPEC_FILE = "bottleneck.json"
WEIGHTS_FILE = "bottleneck.safetensors"
FORMAT_VERSION = 1

# Where each placement puts adapters: after the attention block's output projection and after
# the feed-forward block's output projection (before dropout, residual and LayerNorm).
PLACEMENTS = {"houlsby": ("attention", "feed_forward"), "pfeiffer": ("feed_forward",)}
_PROJECTIONS = {
    "bert": {
        "attention": r"encoder\.layer\.\d+\.attention\.output\.dense",
        "feed_forward": r"encoder\.layer\.\d+\.output\.dense",  # not intermediate.dense
    },
    "gpt2": {"attention": r"h\.\d+\.attn\.c_proj", "feed_forward": r"h\.\d+\.mlp\.c_proj"},
}
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}
# The references' choices: Houlsby's adapter-bert used GELU, AdapterHub's Pfeiffer config ReLU.
_ACTIVATION_OF = {"houlsby": "gelu", "pfeiffer": "relu"}


@dataclass(frozen=True)
class BottleneckSpec:
    """What ``bottleneck.json`` records: enough to rebuild the adapters before their weights."""

    placement: str
    size: int
    """Bottleneck width."""
    hidden: int
    """Width of the projections' outputs (the backbone's hidden size)."""
    activation: str
    modules: tuple[str, ...]
    """Projections that carry an adapter, as named in the adapted model."""


class Bottleneck(nn.Module):
    """x + up(act(down(x))). ``up`` starts at zero, so the adapted model starts as the base
    (and, as LoRA's zero B, ``down`` gets its first gradient once ``up`` has moved)."""

    def __init__(self, hidden: int, size: int, activation: str, placement: str) -> None:
        super().__init__()
        self.placement = placement
        self.down = nn.Linear(hidden, size)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(size, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))


def _run_bottleneck(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
    """Forward hook of an adapted projection. The child is looked up at each call (not held in
    a closure), so a deepcopy runs its own adapter and a stripped model runs none."""
    adapter = module._modules.get(CHILD)
    return output if adapter is None else adapter(output)


def projection_names(model: nn.Module, placement: str) -> tuple[str, ...]:
    """The projections ``placement`` adapts in ``model`` (a bare backbone or a classifier)."""
    model_type = str(getattr(getattr(model, "config", None), "model_type", None))
    patterns = _PROJECTIONS.get(model_type)
    if patterns is None:
        raise ConfigError(
            f"peft.method=adapter knows where the projections of {', '.join(_PROJECTIONS)} "
            f"backbones are, not of {model_type}; use peft.method=lora"
        )
    wanted = re.compile(
        r"(.+\.)?(" + "|".join(patterns[part] for part in PLACEMENTS[placement]) + ")"
    )
    names = tuple(name for name, _ in model.named_modules() if wanted.fullmatch(name))
    if not names:
        raise ConfigError(f"peft.method=adapter found no {placement} projections in this model")
    return names


def attach(model: nn.Module, spec: BottleneckSpec) -> nn.Module:
    """Add an adapter after each of ``spec.modules`` (new adapters: the identity)."""
    for name in spec.modules:
        proj = model.get_submodule(name)
        if CHILD in proj._modules:
            raise ConfigError(f"{name} already carries a bottleneck adapter; add adapters once")
        ref = next(proj.parameters())
        adapter = Bottleneck(spec.hidden, spec.size, spec.activation, spec.placement)
        proj.add_module(CHILD, adapter.to(device=ref.device, dtype=ref.dtype))
        if _run_bottleneck not in proj._forward_hooks.values():  # a stripped model keeps it
            proj.register_forward_hook(_run_bottleneck)
    return model


@METHODS.register("adapter")
def adapter(model: nn.Module, cfg: PeftConfig, ctx: MethodContext) -> nn.Module:
    """Bottleneck adapters; everything else in the backbone frozen, the head trainable."""
    placement = cfg.adapter_placement
    modules = projection_names(model, placement)  # refuses a backbone it does not know
    config: Any = getattr(model, "config", None)
    spec = BottleneckSpec(
        placement=placement,
        size=cfg.adapter_size,
        hidden=int(config.hidden_size),
        activation=_ACTIVATION_OF[placement],
        modules=modules,
    )
    attach(model, spec)
    return train_only(model, lambda n: _is_adapter(n) or n.startswith(ctx.head_modules))


def _is_adapter(name: str) -> bool:
    return f".{CHILD}." in f".{name}"


def describe(model: nn.Module) -> BottleneckSpec | None:
    """The adapters ``model`` carries, or None."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, Bottleneck)]
    if not found:
        return None
    first = found[0][1]
    return BottleneckSpec(
        placement=first.placement,
        size=first.down.out_features,
        hidden=first.down.in_features,
        activation=next(k for k, v in ACTIVATIONS.items() if type(first.act) is v),
        modules=tuple(n.rpartition(".")[0] for n, _ in found),
    )


def save(model: nn.Module, directory: Path) -> None:
    spec = describe(model)
    if spec is None:
        raise ModelError("this model carries no bottleneck adapters to save")
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if _is_adapter(k)
    }
    save_file(tensors, str(directory / WEIGHTS_FILE))
    info = {"format_version": FORMAT_VERSION, **asdict(spec)}
    (directory / SPEC_FILE).write_text(json.dumps(info, indent=2))


def strip(model: nn.Module) -> nn.Module:
    """``model`` without its adapters (call it on a copy): its hooks then pass outputs through."""
    for module in model.modules():
        module._modules.pop(CHILD, None)
    return model


def is_saved(directory: Path) -> bool:
    return (directory / SPEC_FILE).is_file()


def load(model: nn.Module, directory: Path) -> nn.Module:
    """``model`` (the backbone as saved beside ``directory``) with its saved adapters."""
    try:
        info = json.loads((directory / SPEC_FILE).read_text())
        info.pop("format_version", None)
        spec = BottleneckSpec(**{**info, "modules": tuple(info["modules"])})
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelError(
            f"{directory / SPEC_FILE} is damaged ({exc}); save the model again"
        ) from None
    attach(model, spec)
    missing, unexpected = model.load_state_dict(
        load_file(str(directory / WEIGHTS_FILE)), strict=False
    )
    bad = [k for k in missing if _is_adapter(k)] + list(unexpected)
    if bad:
        raise ModelError(f"{directory / WEIGHTS_FILE} does not match {SPEC_FILE}: {bad[:5]}")
    return model
