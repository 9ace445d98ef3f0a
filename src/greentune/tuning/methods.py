"""PEFT method registry: config -> the backbone with the right parameters trainable.

``lora`` (with DoRA / rsLoRA), ``adalora``, ``ia3``, ``ln``, ``prompt`` and ``prefix`` go
through the ``peft`` library (so adapters save and load with ``PeftModel``); ``adapter``
(bottleneck adapters, ``bottleneck.py``) is greentune's own; ``full`` trains everything and
``frozen`` trains only what sits outside the backbone (the encoder and head, or the classifier).
"""

from __future__ import annotations

import copy
import inspect
import json
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from greentune.config import PeftConfig
from greentune.errors import ConfigError
from greentune.train.callbacks import Callback, LoopState, SetupContext
from greentune.tuning import bottleneck
from greentune.tuning.base import METHODS, Method, MethodContext, train_only

__all__ = [
    "METHODS",
    "Method",
    "MethodContext",
    "apply_method",
    "load_adapter",
    "merge_adapter",
    "method_callbacks",
    "save_with_adapter",
]

_LN_DEFAULTS = {"bert": ["LayerNorm"], "gpt2": ["ln_1", "ln_2", "ln_f"]}


def apply_method(model: nn.Module, cfg: PeftConfig, ctx: MethodContext) -> nn.Module:
    return METHODS.get(cfg.method)(model, cfg, ctx)


def _targets(cfg: PeftConfig) -> list[str] | None:
    return list(cfg.target_modules) if cfg.target_modules else None


def _peft(model: nn.Module, peft_config: object) -> nn.Module:
    from peft import get_peft_model

    try:
        return get_peft_model(model, peft_config)  # type: ignore[call-overload]
    except ValueError as exc:
        raise ConfigError(
            f"peft cannot adapt this backbone ({exc}); set peft.target_modules to module names "
            "of the backbone, e.g. [query, value] for BERT or [c_attn] for GPT-2"
        ) from None


@METHODS.register("lora")
def lora(model: nn.Module, cfg: PeftConfig, ctx: MethodContext) -> nn.Module:
    from peft import LoraConfig

    return _peft(
        model,
        LoraConfig(
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=_targets(cfg),
            task_type=ctx.task_type,
            use_dora=cfg.use_dora,
            use_rslora=cfg.use_rslora,
        ),
    )


@METHODS.register("adalora")
def adalora(model: nn.Module, cfg: PeftConfig, ctx: MethodContext) -> nn.Module:
    """AdaLoRA prunes ranks on a schedule; the loop calls ``update_and_allocate`` each step."""
    from peft import AdaLoraConfig

    # The allocator scores ranks on the steps before total - tfinal and prunes to the budget at
    # total - tfinal. A forecaster's head starts at zero, so its first step sends no gradient
    # into the backbone: with 3 steps that first step was the only one scored, every rank
    # scored 0 and all of them were pruned (an empty adapter). 4 scores step 2 as well.
    total = max(ctx.total_steps, 4)
    return _peft(
        model,
        AdaLoraConfig(
            init_r=cfg.r,
            target_r=cfg.target_r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=_targets(cfg),
            task_type=ctx.task_type,
            total_step=total,
            tinit=max(1, total // 10),
            tfinal=max(1, total // 5),
            deltaT=max(1, total // 50),
        ),
    )


@METHODS.register("ia3")
def ia3(model: nn.Module, cfg: PeftConfig, ctx: MethodContext) -> nn.Module:
    from peft import IA3Config

    targets = _targets(cfg)
    return _peft(
        model,
        IA3Config(
            target_modules=targets,
            task_type=ctx.task_type,
            feedforward_modules=[] if targets else None,
        ),
    )


@METHODS.register("ln")
def ln_tuning(model: nn.Module, cfg: PeftConfig, ctx: MethodContext) -> nn.Module:
    """LayerNorm tuning (GPT4TS trains only the LayerNorms of the language model)."""
    from peft import LNTuningConfig

    targets = _targets(cfg)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if targets is None:
        targets = _LN_DEFAULTS.get(str(model_type))
    if targets is None:
        targets = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
        )
    return _peft(model, LNTuningConfig(target_modules=targets, task_type=ctx.task_type))


@METHODS.register("full")
def full(model: nn.Module, cfg: PeftConfig, ctx: MethodContext) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


@METHODS.register("frozen")
def frozen(model: nn.Module, cfg: PeftConfig, ctx: MethodContext) -> nn.Module:
    return train_only(model, lambda name: name.startswith(ctx.head_modules))


@METHODS.register("prompt")
def prompt(model: nn.Module, cfg: PeftConfig, ctx: MethodContext) -> nn.Module:
    """Prompt tuning (Lester et al.): trainable virtual tokens before the input embeddings,
    initialised at random; peft keeps the classifier head trainable."""
    from peft import PromptTuningConfig, PromptTuningInit

    _classifier_only("prompt", ctx)
    # models.classifier.POOLING_KEY (that module imports this one)
    mean_pooled = getattr(getattr(model, "config", None), "classifier_pooling", "cls") == "mean"
    if isinstance(getattr(model, "score", None), nn.Module) and not mean_pooled:
        # transformers' decoder classifiers (GPT-2, Llama, ...) name their head ``score`` and
        # read the last non-pad token, which they find from input_ids. peft hands them
        # embeddings instead, so they read the last position: a pad under right padding, and a
        # text's class then depended on its batch (0.29 logit apart, tiny GPT-2). A mean over
        # the attention mask (model.pooling=mean) has no such problem.
        raise ConfigError(
            f"peft.method=prompt cannot train {type(model).__name__} with model.pooling=cls: "
            "it classifies from the last real token, which it cannot find once peft passes "
            "embeddings instead of token ids (it would read padding); use model.pooling=mean, "
            "peft.method=lora or adapter"
        )
    return _peft(
        model,
        PromptTuningConfig(
            task_type=ctx.task_type,
            num_virtual_tokens=cfg.virtual_tokens,
            prompt_tuning_init=PromptTuningInit.RANDOM,
        ),
    )


@METHODS.register("prefix")
def prefix(model: nn.Module, cfg: PeftConfig, ctx: MethodContext) -> nn.Module:
    """Prefix tuning (Li & Liang): trainable keys and values before every layer's own; the
    attention mask gains the virtual tokens, so every text attends to them and not to padding.
    Runs on BERT-style and GPT-2 classifiers (under model.pooling=cls GPT-2 still finds its
    last real token from the token ids, which peft passes through unchanged)."""
    from peft import PrefixTuningConfig

    _classifier_only("prefix", ctx)
    if _prefix_argument(model) is None:
        raise ConfigError(
            f"peft.method=prefix cannot train {type(model).__name__}: peft hands the prefix "
            "keys and values to the forward as past_key_values (transformers 5 calls it cache), "
            "and neither its forward nor its transformer's takes either; use peft.method=lora "
            "(or prefix with a BERT-style or GPT-2 classifier)"
        )
    return _peft(
        _pass_prefix_as_cache(model),
        PrefixTuningConfig(task_type=ctx.task_type, num_virtual_tokens=cfg.virtual_tokens),
    )


def _classifier_only(name: str, ctx: MethodContext) -> None:
    if ctx.task_type is None:
        raise ConfigError(
            f"peft.method={name} is for the text classifier: peft adds its virtual tokens only "
            "in a task model's forward, and the forecaster's head reads every token position "
            "of a bare backbone; use peft.method=lora (or adapter)"
        )


def _prefix_argument(model: nn.Module) -> str | None:
    """How ``model``'s forward takes the prefix: ``past_key_values`` (peft 0.21 passes it only
    to a forward that names it, else to the transformer's, else it raises), ``cache``
    (transformers 5's name, in the model's forward or, through its ``**kwargs``, its
    transformer's), or None."""
    params = inspect.signature(model.forward).parameters
    inner = getattr(model, "base_model", model)
    inner_params = inspect.signature(inner.forward).parameters
    if "past_key_values" in params or "past_key_values" in inner_params:
        return "past_key_values"
    passes_on = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "cache" in params or (passes_on and "cache" in inner_params):
        return "cache"
    return None


# peft 0.21.2 hands prefix tuning's keys and values (a DynamicCache, one layer per transformer
# layer) to the classifier as ``past_key_values``, and only if the forward's signature names
# that argument; transformers 5.24 renamed it ``cache`` (``BertModel.forward(..., cache,
# use_cache, **kwargs)``), so peft's forward raises on every backbone. The classifier instance
# (not its class) gets this forward, which names ``past_key_values`` and hands it on as
# ``cache``. Drop it and its helpers (``_prefix_argument``'s ``cache`` case,
# ``_pass_prefix_as_cache``, ``_drop_prefix_shim``) once peft names ``cache``.
def _forward_with_prefix(
    self: nn.Module, *args: Any, past_key_values: Any = None, **kwargs: Any
) -> Any:
    if past_key_values is not None:
        kwargs["cache"] = past_key_values
    return type(self).forward(self, *args, **kwargs)


def _pass_prefix_as_cache(model: nn.Module) -> nn.Module:
    """``model`` with ``_forward_with_prefix`` where its forward takes the prefix as ``cache``
    (a bound method, so that ``copy.deepcopy`` binds it to the copy)."""
    if _prefix_argument(model) == "cache":
        model.forward = types.MethodType(_forward_with_prefix, model)  # type: ignore[method-assign]
    return model


def _drop_prefix_shim(model: nn.Module) -> None:
    if getattr(vars(model).get("forward"), "__func__", None) is _forward_with_prefix:
        del model.forward


def save_with_adapter(model: Any, directory: Path, base_name: str = "backbone") -> Any:
    """Save a (possibly adapted) model as ``adapter/`` + ``<base_name>/``; return the base.

    The base is a copy without the adapter (peft's layers unloaded, or the bottlenecks
    stripped) with the untouched base weights and the trained head, so ``<base_name>/`` loads
    with plain transformers and ``load_adapter`` puts the adapter back.
    """
    if hasattr(model, "peft_config"):
        model.save_pretrained(directory / "adapter")
        base = _without_peft(copy.deepcopy(model))
    elif bottleneck.describe(model) is not None:
        bottleneck.save(model, directory / "adapter")
        base = bottleneck.strip(copy.deepcopy(model))
    else:
        base = model
    base.save_pretrained(directory / base_name)
    return base


def _without_peft(model: Any) -> Any:
    if hasattr(model, "unload"):
        return model.unload()
    # Prompt learning injects no layers (no unload) but wraps the classifier head to train it:
    # put the trained head back in place of the wrapper, as unload does.
    from peft.utils import ModulesToSaveWrapper

    base = model.get_base_model()
    for name, module in list(base.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, attr = name.rpartition(".")
            trained = module.unload_and_optionally_merge_module(False, False, None)
            setattr(base.get_submodule(parent), attr, trained)
    _drop_prefix_shim(base)  # backbone/ is a plain transformers model
    return base


def load_adapter(model: Any, directory: Path) -> Any:
    """``model`` (a base loaded from ``backbone/``) with the adapter saved in ``directory``:
    a peft adapter (``PeftModel``) or bottleneck adapters; unchanged when there is none."""
    if bottleneck.is_saved(directory):
        return bottleneck.load(model, directory)
    if directory.is_dir():
        from peft import PeftModel

        config = directory / "adapter_config.json"
        if config.is_file() and json.loads(config.read_text()).get("peft_type") == "PREFIX_TUNING":
            model = _pass_prefix_as_cache(model)
        return PeftModel.from_pretrained(model, directory)
    return model


def merge_adapter(model: Any, where: Path) -> Any:
    """A PEFT-wrapped model with its adapter folded into the weights; plain models unchanged.
    Bottleneck adapters are nonlinear, so they cannot be folded: the model comes back as it is,
    adapters in place (they run in its forward; ``onnx`` exports them, ``int8-dynamic`` refuses
    them). ``where`` (the run) is named in the error for the peft methods that cannot be merged
    (prompt and prefix tuning run only inside peft's forward)."""
    if not hasattr(model, "peft_config"):
        return model
    if not hasattr(model, "merge_and_unload"):
        raise ConfigError(
            f"{where}: its PEFT method cannot be merged into the weights (prompt/prefix "
            "tuning); use a run trained with lora (DoRA and rsLoRA too), adalora, ia3, ln, "
            "full or adapter"
        )
    return model.merge_and_unload()


class AdaLoraAllocator(Callback):
    """AdaLoRA prunes ranks on a schedule: after each optimizer step, before the gradients are
    cleared, ``update_and_allocate`` reads them. It needs whole gradients, so FSDP is refused."""

    def __init__(self, update: Callable[[int], None]) -> None:
        self.update = update

    def on_setup(self, ctx: SetupContext) -> None:
        if ctx.sharded:
            raise ConfigError(
                "train.distributed_strategy=fsdp cannot run peft.method=adalora (its rank "
                "allocator reads whole gradients after each step); use ddp"
            )

    def on_step_end(self, state: LoopState, loss: float) -> None:
        self.update(state.step)


def method_callbacks(model: nn.Module) -> list[Callback]:
    """The training callbacks a model's PEFT method needs (AdaLoRA's rank allocation)."""
    base = getattr(model, "base_model", None)
    update = getattr(base, "update_and_allocate", None)
    return [AdaLoraAllocator(update)] if update is not None else []
