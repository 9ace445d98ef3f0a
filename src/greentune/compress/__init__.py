"""Compress a finished run: int8, ONNX, pruning, distillation — each variant a run of its own,
measured against the original the same way (size, latency, throughput, metrics, energy)."""

from greentune.compress.methods import COMPRESSORS, parse_method
from greentune.compress.pipeline import CompressOptions, compress_run

__all__ = ["COMPRESSORS", "CompressOptions", "compress_run", "parse_method"]
