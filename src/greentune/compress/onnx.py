"""ONNX export (torch.onnx, dynamo exporter) and ONNX Runtime dynamic int8 quantization.

The TorchScript exporter (``dynamo=False``) traced transformers 5's BERT into a graph whose
outputs did not match PyTorch's (a 2-layer BERT); the dynamo exporter's did, so it is the one
used, and every export is checked against PyTorch before it is kept.
Optimum is not used: optimum-onnx pins transformers < 4.58 (STACK.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from greentune.compress.task import LoadedRun, sample_batch
from greentune.errors import CompressError
from greentune.models.variants import ONNX_FILE, OrtModel

EXPORT_TOLERANCE = 1e-3
"""Largest |onnx - torch| accepted for an fp32 export, relative to the output's scale."""
TOKEN_INPUTS = ("input_ids", "attention_mask")


class _Positional(nn.Module):
    """Graph inputs are positional tensors; the run's models take a batch dict."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.names, tensors, strict=True)))


def export(task: LoadedRun, path: Path) -> float:
    """Export ``task.model`` with a dynamic batch (and token) axis; returns the largest absolute
    difference to PyTorch over a batch of 1 and a batch of 32 test inputs."""
    names = task.input_names
    example = sample_batch(task, 4, seed=1)
    batch = torch.export.Dim("batch")
    tokens = torch.export.Dim("tokens")
    shapes = tuple({0: batch, 1: tokens} if k in TOKEN_INPUTS else {0: batch} for k in names)
    inner = task.inner(task.model)
    attention = getattr(inner.config, "_attn_implementation", None)
    try:
        if attention and hasattr(inner, "set_attn_implementation"):
            # eager attention exports as plain MatMul/Softmax: fewer nodes than SDPA's
            # NaN-guarded graph (no IsNaN/Where per layer)
            inner.set_attn_implementation("eager")
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                _Positional(task.model.eval(), names),
                tuple(example[k] for k in names),
                input_names=list(names),
                output_names=["output"],
                dynamo=True,
                dynamic_shapes=(shapes,),  # one entry: forward's *tensors
                optimize=True,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; the user needs the first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompressError(f"ONNX export of {task.run} failed: {first}") from exc
    finally:
        if attention and hasattr(inner, "set_attn_implementation"):
            inner.set_attn_implementation(attention)
    if program is None:
        raise CompressError("torch.onnx.export returned no program")
    program.save(str(path), external_data=False)
    model = OrtModel(path, list(names), getattr(task.model, "spec", None))
    diff, scale = 0.0, 1.0
    with torch.no_grad():
        for size in (1, 32):
            b = sample_batch(task, size, seed=2)
            ref = task.model(b).float()
            diff = max(diff, float((ref - model(b).float()).abs().max()))
            scale = max(scale, float(ref.abs().max()))
    if diff > EXPORT_TOLERANCE * scale:
        raise CompressError(
            f"the ONNX export of {task.run} differs from PyTorch by {diff:.3g} (tolerance "
            f"{EXPORT_TOLERANCE * scale:.3g}); the variant was not kept"
        )
    return diff


def quantize(
    task: LoadedRun, fp32: Path, out: Path, optimize: bool, per_channel: bool, skip_int8: bool
) -> dict[str, Any]:
    """ONNX Runtime dynamic quantization: int8 weights for MatMul and the embedding tables
    (Gather), activations quantized per batch. ``optimize`` first fuses the graph with ORT's
    BERT optimizer (attention, layer norm, GELU), as Optimum does before quantizing."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, fused = fp32, False
    if optimize and _is_bert(task):
        source, fused = _fuse_bert(task, fp32), True
    keep_fp32 = [] if skip_int8 else _skip_nodes(source)
    with _quiet():
        quantize_dynamic(
            str(source),
            str(out),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gather", "Attention", "EmbedLayerNormalization"],
            per_channel=per_channel,
            nodes_to_exclude=keep_fp32,
            extra_options={"MatMulConstBOnly": True},
        )
    if source != fp32:
        source.unlink()
    return {"fused": fused, "per_channel": per_channel, "fp32_nodes": keep_fp32}


def _skip_nodes(path: Path) -> list[str]:
    """A forecaster's ridge-initialised skip path (~10^5-10^6 coefficients of very different
    sizes) loses its accuracy in one per-tensor int8 scale; its nodes stay fp32, as in
    int8-dynamic, unless ``skip_int8`` (best with per-channel scales)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    skip = {i.name for i in graph.initializer if ".skip." in f".{i.name}"}
    nodes = [n.name for n in graph.node if any(i in skip for i in n.input)]
    # dynamic quantization first rewrites each Gemm as "<name>_MatMul" + "<name>_Add"
    return [*nodes, *(f"{n}_MatMul" for n in nodes)]


@contextmanager
def _quiet() -> Iterator[None]:
    """The exporter and quantizer log advice (torchvision ops, pre-processing) on the root
    logger; the user needs none of it."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    names = ("torch.onnx", "onnxscript", "onnx_ir", "torch._dynamo", "torch.export")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
        for n, lvl in saved.items():
            logging.getLogger(n).setLevel(lvl)


def _is_bert(task: LoadedRun) -> bool:
    config = getattr(task.inner(task.model), "config", None)
    return getattr(config, "model_type", "") == "bert"


def _fuse_bert(task: LoadedRun, fp32: Path) -> Path:
    from onnxruntime.transformers.optimizer import optimize_model

    config = task.inner(task.model).config
    fused = fp32.with_name("fused.onnx")
    with _quiet():
        optimized = optimize_model(
            str(fp32),
            model_type="bert",
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
            opt_level=1,
        )
    optimized.save_model_to_file(str(fused))
    return fused


def ort_model(task: LoadedRun, model_dir: Path) -> OrtModel:
    spec = getattr(task.model, "spec", None)
    return OrtModel(model_dir / ONNX_FILE, list(task.input_names), spec)
