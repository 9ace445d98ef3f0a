"""How a compressed variant sits on disk and comes back as a model with the run's interface
(``greentune.compress`` writes them; the tasks load them).

A variant's ``model/`` folder keeps the parent's layout (spec, scaler, columns, labels,
tokenizer, ``backbone/config.json``) and adds ``variant.json``::

    {"format": "torch" | "torch-int8" | "onnx", "method": "int8-dynamic", "parent": "...",
     "inputs": ["past", "future"], ...}

- ``torch``: pruned or distilled weights in the plain Hugging Face layout (no greentune needed);
- ``torch-int8``: ``quantized.pt``, the state dict of ``torch.ao.quantization.quantize_dynamic``
  (int8 Linear weights with their scales), loaded into the same quantized skeleton;
- ``onnx``: ``model.onnx`` (fp32 or int8), run by ONNX Runtime with the batch keys in
  ``inputs`` as graph inputs and the network output as its single output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from greentune.errors import CheckpointError, ModelError

VARIANT_FILE = "variant.json"
QUANTIZED_FILE = "quantized.pt"
ONNX_FILE = "model.onnx"


def read_variant(model_dir: Path) -> dict[str, Any]:
    path = model_dir / VARIANT_FILE
    if not path.is_file():
        return {"format": "torch"}
    try:
        info = dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is damaged ({exc}); compress the parent again") from None
    if not isinstance(info.get("format"), str):
        raise CheckpointError(f"{path} is damaged (no format); compress the parent again")
    return info


def quantize_linear(model: nn.Module) -> nn.Module:
    """PyTorch dynamic quantization: int8 Linear weights, activations quantized per batch."""
    import warnings

    with warnings.catch_warnings():  # torch.ao.quantization warns of its future move
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def _load_quantized(skeleton: nn.Module, inner: str, model_dir: Path) -> nn.Module:
    """The same quantized structure as compress built (only ``inner``, the transformer, is
    int8), then its saved int8 weights and scales."""
    model = skeleton.eval()
    setattr(model, inner, quantize_linear(getattr(model, inner)))
    state = torch.load(model_dir / QUANTIZED_FILE, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(
            f"{model_dir / QUANTIZED_FILE} does not match its config: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    return model.eval()


class OrtModel:
    """An ONNX Runtime session behind the call interface of the torch model it replaces."""

    def __init__(self, path: Path, inputs: list[str], spec: Any = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        # ORT's workers busy-wait after each call by default; between the interleaved timing
        # rounds (and beside torch in a server) that spinning steals the cores from the next
        # model: with it on, the torch models timed after ORT ones looked several times slower.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = inputs
        self.spec = spec

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feed = {k: np.ascontiguousarray(batch[k].numpy()) for k in self.inputs}
        return torch.from_numpy(self.session.run(None, feed)[0])

    def eval(self) -> OrtModel:
        return self

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise ModelError("an ONNX variant serves predictions only; it cannot be trained")


def load_forecast_variant(model_dir: Path) -> Any:
    from greentune.models.forecaster import SPEC_FILE, Forecaster, ForecasterSpec

    info = read_variant(model_dir)
    raw = json.loads((model_dir / SPEC_FILE).read_text())
    hidden = raw.pop("hidden")
    raw["quantiles"] = tuple(raw["quantiles"])
    spec = ForecasterSpec(**raw)
    if info["format"] == "onnx":
        return OrtModel(model_dir / ONNX_FILE, list(info["inputs"]), spec)
    if info["format"] == "torch-int8":
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.from_pretrained(model_dir / "backbone", local_files_only=True)
        kwargs = {"add_pooling_layer": False} if config.model_type == "bert" else {}
        backbone = AutoModel.from_config(config, **kwargs)
        return _load_quantized(Forecaster(spec, backbone, hidden), "backbone", model_dir)
    raise CheckpointError(f"{model_dir}: unknown variant format {info['format']!r}")


def load_classify_variant(model_dir: Path) -> tuple[Any, Any, list[str]]:
    from transformers import AutoConfig, AutoTokenizer

    from greentune.models.classifier import TextClassifier, classifier_from_config

    info = read_variant(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir / "backbone", local_files_only=True)
    labels = json.loads((model_dir / "labels.json").read_text())
    if info["format"] == "onnx":
        return OrtModel(model_dir / ONNX_FILE, list(info["inputs"])), tokenizer, labels
    if info["format"] == "torch-int8":
        config = AutoConfig.from_pretrained(model_dir / "backbone", local_files_only=True)
        skeleton = TextClassifier(classifier_from_config(config))
        return _load_quantized(skeleton, "model", model_dir), tokenizer, labels
    raise CheckpointError(f"{model_dir}: unknown variant format {info['format']!r}")
