"""Writing a compressed variant's ``model/`` folder (the layout and loaders are in
``greentune.models.variants``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from greentune.models.variants import ONNX_FILE, QUANTIZED_FILE, VARIANT_FILE, quantize_linear

__all__ = ["ONNX_FILE", "QUANTIZED_FILE", "drop_weights", "quantize_linear", "write_variant"]

WEIGHT_FILES = ("model.safetensors", "heads.safetensors")


def write_variant(model_dir: Path, info: dict[str, Any]) -> None:
    (model_dir / VARIANT_FILE).write_text(json.dumps(info, indent=2))


def drop_weights(model_dir: Path) -> None:
    """The fp32 weights a converted variant no longer reads (its size on disk is its own)."""
    for name in WEIGHT_FILES:
        for path in model_dir.rglob(name):
            path.unlink()
    for adapter in model_dir.rglob("adapter"):
        if adapter.is_dir():
            for path in sorted(adapter.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            adapter.rmdir()
