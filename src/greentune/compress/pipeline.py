"""``greentune compress RUN --method M ...``: build each variant as a run of its own, measure
every variant and the original the same way, apply the quality guard, write compression.json.

    runs/<parent>/compression.json       the comparison (reference row + one row per variant)
    runs/<parent>-<method>/              a run: config.yaml, run.json (parent, method),
                                         metrics.json, predictions.parquet, energy.json, model/
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from greentune.compress.formats import write_variant
from greentune.compress.measure import BenchPlan, bench, dir_bytes, latency_row
from greentune.compress.methods import COMPRESSORS, Built, parse_method
from greentune.compress.task import LoadedRun, load_task, sample_batch
from greentune.config import replace
from greentune.energy.base import kind_of
from greentune.energy.session import AnyMeter, metered
from greentune.errors import CheckpointError, CompressError, ConfigError, ModelError
from greentune.io import replace_dir
from greentune.results import ModelResult
from greentune.rundir import RunDir, clean_stale_temporaries
from greentune.typed import parse_fraction

Log = Callable[[str], None]
REFERENCE = "fp32"


@dataclass(frozen=True)
class CompressOptions:
    """What ``greentune compress`` is asked to do (built with ``greentune.typed.build``)."""

    methods: tuple[str, ...]
    """Methods with options, ``NAME[:key=value,...]`` (``COMPRESSORS``)."""
    max_metric_drop: float | str | None = None
    """Relative worsening of the headline metric a variant may show: 0.01 or '1%'; None: any."""
    threads: int | None = None
    """Threads for every variant; None: all cores this process may use."""
    plan: BenchPlan = field(default_factory=BenchPlan)
    replace: bool = False
    """Rebuild variants that already exist."""
    keep_rejected: bool = False
    """Keep the run of a variant the quality guard rejected."""

    def __post_init__(self) -> None:
        if not self.methods:
            raise ConfigError("give at least one method: --method int8-dynamic (or -m ...)")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if isinstance(self.max_metric_drop, str):
            drop = parse_fraction(self.max_metric_drop, "max_metric_drop")
            object.__setattr__(self, "max_metric_drop", drop)
        if self.drop_limit is not None and self.drop_limit < 0:
            raise ConfigError(f"max_metric_drop must be >= 0, got {self.max_metric_drop}")

    @property
    def drop_limit(self) -> float | None:
        return None if self.max_metric_drop is None else float(self.max_metric_drop)


@dataclass
class Variant:
    name: str
    method: str
    options: dict[str, Any]
    scratch: Path
    final: Path
    built: Built | None = None
    build_s: float = 0.0
    build_j: float | None = None
    build_kind: str | None = None
    result: ModelResult | None = None
    frame: pd.DataFrame | None = None
    error: str | None = None


def variant_name(parent: Path, method: str, options: dict[str, Any]) -> str:
    defaults = COMPRESSORS.get(method).options
    changed = [f"{k}{v:g}" for k, v in options.items() if v != defaults[k] and v is not None]
    return "-".join([parent.name, method, *changed])


def compress_run(path: str | Path, opts: CompressOptions, log: Log) -> dict[str, Any]:
    parsed = [parse_method(m) for m in opts.methods]  # bad options fail before any work
    threads = opts.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)  # before any ONNX session: they take the same count
    with RunDir.open(path).lock("compress"):
        clean_stale_temporaries(Path(path))
        task = load_task(path)
        variants = _plan_variants(task.run.path, parsed, opts.replace)
        log(f"compress {task.run} ({task.task}, {task.model_name}) with {threads} threads")
        try:
            return _compress(task, variants, threads, opts, log)
        finally:  # an interrupted call leaves no half-built variant behind
            for v in variants:
                shutil.rmtree(v.scratch, ignore_errors=True)


def _compress(
    task: LoadedRun, variants: list[Variant], threads: int, opts: CompressOptions, log: Log
) -> dict[str, Any]:
    with ExitStack() as stack:
        parent_meter = stack.enter_context(metered(task.run.path, task.cfg.energy, "compress"))
        with parent_meter.window("reference/test"):
            ref_result, _ = task.score(task.model)
        models: dict[str, Any] = {REFERENCE: task.model}
        meters: dict[str, AnyMeter] = {REFERENCE: parent_meter}
        for v in variants:
            v.scratch.mkdir(parents=True)
            # journaled in the parent: a crash removes the scratch, not what it cost
            meter = stack.enter_context(
                metered(v.scratch, task.cfg.energy, "compress", journal_dir=task.run.path)
            )
            _build(task, v, meter, log)
            if v.built is not None:
                models[v.name], meters[v.name] = v.built.model, meter
        log(f"timing {len(models)} models in {opts.plan.rounds} interleaved rounds")
        timings = bench(models, sample_batch(task, 1), sample_batch(task, 32), opts.plan, meters)
    rows = [_reference_row(task, ref_result, latency_row(timings[REFERENCE], 32))]
    for v in variants:
        row = _variant_row(task, v, rows[0], timings.get(v.name), opts)
        rows.append(row)
        _finish(task, v, row, opts.keep_rejected)
    report = _report(task, threads, opts, rows)
    task.run.write_compression(report)
    return report


def _plan_variants(
    parent: Path, parsed: list[tuple[str, dict[str, Any]]], replace_existing: bool
) -> list[Variant]:
    variants: list[Variant] = []
    for method, options in parsed:
        name = variant_name(parent, method, options)
        if any(v.name == name for v in variants):
            raise CompressError(f"--method {method} is given twice with the same options")
        final = parent.parent / name
        if final.exists() and not replace_existing:
            raise CheckpointError(
                f"{final} already exists; delete it or pass --replace to build it again"
            )
        scratch = parent.parent / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        variants.append(Variant(name, method, options, scratch, final))
    return variants


def _build(task: LoadedRun, v: Variant, meter: AnyMeter, log: Log) -> None:
    info = COMPRESSORS.get(v.method)
    t0 = time.perf_counter()
    try:
        with meter.window("build") as handle:
            v.built = info.build(task, v.options, v.scratch / "model", meter.window)
        v.build_s = time.perf_counter() - t0
        v.build_j = handle.result.total_j if handle.result else None
        v.build_kind = handle.result.kind if handle.result else None
        with meter.window("test"):
            v.result, v.frame = task.score(v.built.model)
    except (CompressError, ModelError) as exc:
        v.built, v.error = None, str(exc)
        log(f"{v.name}: failed: {exc}")
        return
    key = task.quality.metric
    log(f"{v.name}: built in {v.build_s:.1f} s; {key} {v.result.score(key):.4g}")


def _reference_row(task: LoadedRun, result: ModelResult, timing: dict[str, Any]) -> dict:
    model_dir = task.run.model_dir
    return {
        "name": REFERENCE,
        "method": "none",
        "run": str(task.run),
        "status": "reference",
        "format": "torch",
        "size_bytes": dir_bytes(model_dir) - _tokenizer_bytes(model_dir),
        "parameters": sum(p.numel() for p in task.model.parameters()),
        "metrics": dict(result.scores),
        **timing,
    }


def _tokenizer_bytes(model_dir: Path) -> int:
    """Sizes compare weights and configs; a text model's tokenizer files are the same in all."""
    names = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
    return sum(p.stat().st_size for n in names for p in model_dir.rglob(n))


def _variant_row(
    task: LoadedRun,
    v: Variant,
    ref: dict[str, Any],
    timing: Any,
    opts: CompressOptions,
) -> dict[str, Any]:
    row: dict[str, Any] = {"name": v.name, "method": v.method, "options": v.options}
    if v.built is None or v.result is None:
        return {**row, "status": "failed", "error": v.error}
    model_dir = v.scratch / "model"
    size = dir_bytes(model_dir) - _tokenizer_bytes(model_dir)
    timing_row = latency_row(timing, 32)
    timing_row["energy_kind"] = kind_of([timing_row["energy_kind"], v.build_kind])  # + build_wh
    key = task.quality.metric
    change = task.quality.worsening(v.result.score(key), ref["metrics"][key])
    limit = opts.drop_limit
    accepted = limit is None or change <= limit
    row.update(
        run=str(v.final),
        status="accepted" if accepted else "rejected",
        format=v.built.fmt,
        size_bytes=size,
        size_ratio=size / ref["size_bytes"],
        parameters=v.built.parameters,
        metrics=dict(v.result.scores),
        metric_drop=change,
        **timing_row,
        speedup_b1=ref["latency_b1_ms"]["median"] / timing_row["latency_b1_ms"]["median"],
        speedup_b32=ref["latency_b32_ms"]["median"] / timing_row["latency_b32_ms"]["median"],
        build_s=v.build_s,
        build_wh=v.build_j / 3600 if v.build_j is not None else None,
        notes=v.built.notes,
    )
    if not accepted:
        row["reason"] = f"{key} worsened by {100 * change:.2f} % (limit {100 * (limit or 0):.2f} %)"
    return row


def variant_privacy(
    privacy: dict[str, Any] | None, method: str, notes: dict[str, Any]
) -> dict[str, Any] | None:
    """A variant keeps its parent's DP guarantee when it only transforms the model
    (post-processing); one that trained on the training data (pruning's recovery, distillation)
    does so without DP and is not private."""
    if not privacy or privacy.get("not_private") or not ({"recovery", "training"} & set(notes)):
        return privacy
    return {
        **privacy,
        "epsilon": None,
        "not_private": f"{method} trained on the training data without DP, so the parent's "
        f"(epsilon {privacy.get('epsilon', float('nan')):.3g}) guarantee does not carry over",
    }


def _finish(task: LoadedRun, v: Variant, row: dict[str, Any], keep_rejected: bool) -> None:
    """Accepted variants become runs; a rejected one is removed unless asked to keep it."""
    if v.built is None or v.result is None or (row["status"] == "rejected" and not keep_rejected):
        shutil.rmtree(v.scratch, ignore_errors=True)
        return
    parent = task.run.metrics
    row_name = f"{task.model_name}+{v.method}"
    mine = ModelResult(
        dict(v.result.scores),
        confusion=v.result.confusion,
        predictions=len(task.batches["test"]),
        energy_windows={"fit": {"build": 1.0}, "predict": {"test": 1.0}},
    )
    results = {row_name: mine, **{k: r for k, r in parent.test.items() if k != task.model_name}}
    compression: dict[str, Any] = {k: row[k] for k in ("method", "options", "status") if k in row}
    by_target = None
    if parent.by_target is not None:  # the variant's scores per target replace its parent's
        by_target = {k: r for k, r in parent.by_target.items() if k != task.model_name}
        own = task.by_target(v.frame) if task.by_target and v.frame is not None else None
        by_target = {row_name: own, **by_target} if own else by_target
    metrics = dataclasses.replace(
        parent,
        model=row_name,
        test=results,
        compression=compression,
        privacy=variant_privacy(parent.privacy, v.method, v.built.notes),
        by_target=by_target,
    )
    scratch = RunDir(v.scratch)
    scratch.write_metrics(metrics)
    scratch.write_config(replace(task.cfg, name=v.final.name, output_dir=str(v.final.parent)))
    _write_predictions(task, v, scratch, row_name)
    write_variant(
        v.scratch / "model",
        {
            "format": row["format"],
            "method": v.method,
            "options": v.options,
            "parent": str(task.run),
            "inputs": list(task.input_names),
        },
    )
    scratch.set_status(
        "complete" if row["status"] == "accepted" else "rejected",
        task=task.cfg.task,
        parent=str(task.run),
        compression={"method": v.method, "options": v.options},
    )
    replace_dir(v.scratch, v.final)


def _write_predictions(task: LoadedRun, v: Variant, scratch: RunDir, row_name: str) -> None:
    frames = []
    if (task.run.path / "predictions.parquet").is_file():
        parent = task.run.predictions
        frames.append(parent[parent["model"] != task.model_name])
    if v.frame is not None:
        frames.insert(0, v.frame.assign(model=row_name))
    if frames:
        scratch.write_predictions(pd.concat(frames, ignore_index=True))


def _report(
    task: LoadedRun, threads: int, opts: CompressOptions, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    import platform

    from greentune.energy.model import cpu_info

    return {
        "schema_version": 1,
        "parent": str(task.run),
        "task": task.task,
        "headline": task.quality.metric,
        "higher_is_better": task.quality.higher_is_better,
        "max_metric_drop": opts.drop_limit,
        "threads": threads,
        "machine": {"cpu": cpu_info().get("model name"), "platform": platform.platform()},
        "bench": {
            "rounds": opts.plan.rounds,
            "calls_b1": opts.plan.calls_b1,
            "calls_b32": opts.plan.calls_b32,
            "warmup": opts.plan.warmup,
        },
        "reference": rows[0],
        "variants": rows[1:],
    }
