"""The compression methods (a registry): each turns a run's model into a variant on disk.

A method gets the run (``LoadedRun``), its options and an empty ``model/`` folder to fill, and
returns what it built. Methods never change ``task.model``: that is the reference every variant
is measured against.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from greentune.compress.formats import (
    ONNX_FILE,
    QUANTIZED_FILE,
    drop_weights,
    quantize_linear,
)
from greentune.compress.recover import (
    depth,
    greedy_layer_choice,
    keep_layers,
    train_student,
)
from greentune.compress.task import LoadedRun, fresh_copy, sample_batch
from greentune.errors import CompressError, ConfigError
from greentune.registry import Registry
from greentune.train.callbacks import Window, no_window
from greentune.tuning import bottleneck


@dataclass
class Built:
    """A variant as built: the model to score and time, its format and what the method did."""

    model: Any
    fmt: str
    parameters: int
    notes: dict[str, Any] = field(default_factory=dict)


Method = Callable[[LoadedRun, dict[str, Any], Path, Window], Built]


@dataclass(frozen=True)
class MethodInfo:
    build: Method
    options: dict[str, Any]
    """Accepted options and their defaults (None: derived from the run)."""
    summary: str


COMPRESSORS: Registry[MethodInfo] = Registry("compression method")


def register(name: str, summary: str, **options: Any) -> Callable[[Method], Method]:
    def decorator(fn: Method) -> Method:
        COMPRESSORS.add(name, MethodInfo(fn, options, summary))
        return fn

    return decorator


def parse_method(text: str) -> tuple[str, dict[str, Any]]:
    """'prune:sparsity=0.6,epochs=1' -> ('prune', {'sparsity': 0.6, 'epochs': 1})."""
    name, _, rest = text.strip().partition(":")
    info = COMPRESSORS.get(name)
    options = dict(info.options)
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in info.options:
            valid = ", ".join(f"{k}=" for k in info.options) or "none"
            raise ConfigError(f"--method {text}: unknown option {item!r}; {name} takes {valid}")
        options[key] = _number(value, f"--method {text}: {key}")
    return name, options


def _number(value: str, what: str) -> float | int:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value.rstrip("%")) / (100 if value.endswith("%") else 1)
    except ValueError:
        raise ConfigError(f"{what} must be a number, got {value!r}") from None


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def max_abs_diff(reference: Any, candidate: Any, batch: dict[str, torch.Tensor]) -> float:
    with torch.no_grad():
        return float((reference(batch).float() - candidate(batch).float()).abs().max())


@register("int8-dynamic", "PyTorch dynamic quantization of the transformer's Linear layers")
def int8_dynamic(task: LoadedRun, options: dict[str, Any], out: Path, window: Window) -> Built:
    model = fresh_copy(task.model)
    task.save_torch(model, out)
    _quantize_inner(task, model)
    drop_weights(out)
    torch.save(model.state_dict(), out / QUANTIZED_FILE)
    batch = sample_batch(task, 32)
    return Built(
        model,
        "torch-int8",
        parameters(task.model),
        {"max_abs_diff": max_abs_diff(task.model, model, batch), "quantized": "transformer"},
    )


def _quantize_inner(task: LoadedRun, model: Any) -> None:
    """Only the transformer: a forecaster's ridge-initialised skip path keeps fp32 weights."""
    if bottleneck.describe(task.inner(model)) is not None:
        # quantize_dynamic swaps the projections that carry the adapters: BERT's Linear ones
        # come back without them (a silently different model), GPT-2's Conv1D ones keep int8
        # adapters that the variant's plain skeleton cannot load.
        raise CompressError(
            f"int8-dynamic cannot quantize {task.run.path}: it was trained with "
            "peft.method=adapter, whose bottleneck adapters torch's dynamic quantization would "
            "drop or make unloadable; use onnx or onnx-int8 (the graph carries the adapters)"
        )
    setattr(model, task.inner_attr, quantize_linear(task.inner(model)))


@register("onnx", "export to ONNX (torch.onnx, dynamo), run by ONNX Runtime, fp32")
def onnx_fp32(task: LoadedRun, options: dict[str, Any], out: Path, window: Window) -> Built:
    from greentune.compress.onnx import export, ort_model

    task.save_torch(task.model, out)
    drop_weights(out)
    diff = export(task, out / ONNX_FILE)
    return Built(ort_model(task, out), "onnx", parameters(task.model), {"max_abs_diff": diff})


@register(
    "onnx-int8",
    "ONNX export + ONNX Runtime dynamic int8 (MatMul weights and embedding tables)",
    optimize=1,
    per_channel=0,
    skip_int8=0,
)
def onnx_int8(task: LoadedRun, options: dict[str, Any], out: Path, window: Window) -> Built:
    from greentune.compress.onnx import export, ort_model, quantize

    task.save_torch(task.model, out)
    drop_weights(out)
    fp32 = out / "fp32.onnx"
    export(task, fp32)
    flags = (bool(options[k]) for k in ("optimize", "per_channel", "skip_int8"))
    notes = quantize(task, fp32, out / ONNX_FILE, *flags)
    fp32.unlink()
    model = ort_model(task, out)
    notes["max_abs_diff"] = max_abs_diff(task.model, model, sample_batch(task, 32))
    return Built(model, "onnx", parameters(task.model), notes)


@register(
    "prune",
    "global magnitude pruning of the transformer's Linear weights + recovery fine-tune",
    sparsity=0.5,
    epochs=1,
    lr=1e-4,
    alpha=0.5,
)
def prune_magnitude(
    task: LoadedRun, options: dict[str, Any], out: Path, window: Window = no_window
) -> Built:
    from torch.nn.utils import prune

    sparsity = float(options["sparsity"])
    if not 0 < sparsity < 1:
        raise ConfigError(f"prune: sparsity must be in (0, 1), got {sparsity}")
    student = fresh_copy(task.model)
    linears = [(m, "weight") for m in task.inner(student).modules() if isinstance(m, nn.Linear)]
    prune.global_unstructured(linears, pruning_method=prune.L1Unstructured, amount=sparsity)
    result = train_student(
        task, student, int(options["epochs"]), float(options["lr"]), options["alpha"], window
    )
    for module, name in linears:  # masks become plain zeros in the weights
        prune.remove(module, name)
    task.save_torch(student, out)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in linears)
    total = sum(m.weight.numel() for m, _ in linears)
    notes = {"sparsity": zeros / total, "recovery": result.summary().to_dict()}
    return Built(student, "torch", parameters(student), notes)


@register(
    "prune-layers",
    "structured pruning: drop the transformer blocks whose removal hurts validation least",
    keep=None,
    epochs=1,
    lr=1e-4,
    alpha=0.5,
)
def prune_layers(
    task: LoadedRun, options: dict[str, Any], out: Path, window: Window = no_window
) -> Built:
    student = fresh_copy(task.model)
    n = depth(task, student)
    keep = int(options["keep"] or max(1, n // 2))
    if not 1 <= keep < n:
        raise ConfigError(f"prune-layers: keep must be in [1, {n - 1}] for {n} layers, got {keep}")
    t0 = time.perf_counter()
    with window("choose-layers"):
        kept, trail = greedy_layer_choice(task, student, keep)
    choose_s = time.perf_counter() - t0
    keep_layers(task.inner(student), kept)
    result = train_student(
        task, student, int(options["epochs"]), float(options["lr"]), options["alpha"], window
    )
    task.save_torch(student, out)
    notes = {
        "layers_kept": kept,
        "of_layers": n,
        "choice": trail,
        "choose_s": choose_s,
        "recovery": result.summary().to_dict(),
    }
    return Built(student, "torch", parameters(student), notes)


@register(
    "distill",
    "a shallower student (evenly spaced teacher layers) trained on the teacher's outputs",
    layers=None,
    epochs=None,
    lr=1e-4,
    alpha=0.5,  # chosen on validation over 0.2 and 0.8, 3 seeds (benchmarks/distill_sweep.py)
)
def distill(
    task: LoadedRun, options: dict[str, Any], out: Path, window: Window = no_window
) -> Built:
    import numpy as np

    student = fresh_copy(task.model)
    n = depth(task, student)
    layers = int(options["layers"] or max(1, n // 2))
    if not 1 <= layers < n:
        raise ConfigError(f"distill: layers must be in [1, {n - 1}] for {n}, got {layers}")
    kept = sorted({round(float(i)) for i in np.linspace(0, n - 1, layers)})
    keep_layers(task.inner(student), kept)
    epochs = int(options["epochs"] or task.cfg.train.epochs)
    result = train_student(task, student, epochs, float(options["lr"]), options["alpha"], window)
    task.save_torch(student, out)
    notes = {"layers_kept": kept, "of_layers": n, "training": result.summary().to_dict()}
    return Built(student, "torch", parameters(student), notes)
