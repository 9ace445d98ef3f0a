"""``model.skip_init: transfer``: the skip path of another run (``model.skip_from``) as this
run's start: its frozen weights and its trained biases (each quantile's offset), fitted on that
run's data and none of this run's rows, so a private run may start from it when that data is
public. The start is saved beside the checkpoints the first time, so a resumed run (or a
restarted federated client) goes on from the start it trained from, whatever the source has
become since."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from safetensors import SafetensorError
from safetensors.numpy import load

from greentune.config import RunConfig
from greentune.data.windows import ForecastData
from greentune.distributed import ranks
from greentune.errors import CheckpointError, ConfigError
from greentune.evaluate.ridge import LinearFit
from greentune.models.forecaster import SPEC_FILE
from greentune.models.variants import read_variant
from greentune.tasks.forecast.artifacts import Columns, load_columns

Log = Callable[[str], None]
TRANSFER_FILE = "transfer-skip.npz"
"""The start as first read, beside the checkpoints: a resumed run keeps it."""


@dataclass
class Source:
    """The source run's skip path and what it was made from."""

    given: Path
    model_dir: Path
    spec: dict[str, Any]
    weight: np.ndarray
    bias: np.ndarray
    columns: Columns
    config: dict[str, Any] | None
    """The source run's config.yaml, read raw (an older run's keys may differ); None for a
    bare model/ folder."""
    digest: str
    """sha256 of its heads.safetensors, which the saved start is keyed by."""

    @property
    def data_path(self) -> str | None:
        return _data_path(self.config)


def _data_path(config: dict[str, Any] | None) -> str | None:
    data = (config or {}).get("data")
    path = data.get("path") if isinstance(data, dict) else None
    return str(path) if path else None


def _model_dir(given: Path) -> Path:
    return given / "model" if (given / "model" / SPEC_FILE).is_file() else given


def _raw_config(model_dir: Path) -> dict[str, Any] | None:
    """The source run's config.yaml, read raw; None for a bare model/ folder."""
    path = model_dir.parent / "config.yaml"
    config = yaml.safe_load(path.read_text()) if path.is_file() else None
    return config if isinstance(config, dict) else None


def read_source(skip_from: str) -> Source:
    """The run (or model/ folder) at ``skip_from``; a clear error naming the file otherwise."""
    given = Path(skip_from).expanduser()
    model_dir = _model_dir(given)
    where = f"model.skip_from={given}"
    if not (model_dir / SPEC_FILE).is_file():
        raise ConfigError(
            f"{where}: no forecasting model there (no model/{SPEC_FILE}); give the directory of "
            "a finished forecasting run"
        )
    run_json = model_dir.parent / "run.json"
    try:
        status = json.loads(run_json.read_text()).get("status") if run_json.is_file() else None
        if status not in (None, "complete"):
            raise ConfigError(f"{where}: that run is {status}, not complete; finish it first")
        if read_variant(model_dir)["format"] != "torch":
            raise ConfigError(
                f"{where} is a compressed variant; start from the run it was compressed from"
            )
        spec = dict(json.loads((model_dir / SPEC_FILE).read_text()))
        heads = model_dir / "heads.safetensors"
        raw = heads.read_bytes()
        tensors = load(raw)  # the bytes the digest is of, read once
        config = _raw_config(model_dir)
        columns = load_columns(model_dir)
    except (OSError, ValueError, TypeError, SafetensorError, yaml.YAMLError, CheckpointError) as e:
        raise ConfigError(f"{where}: its model cannot be read ({e}); train it again") from None
    weight, bias = tensors.get("skip.weight"), tensors.get("skip.bias")
    if spec.get("base") or not spec.get("linear_skip") or weight is None or bias is None:
        raise ConfigError(f"{where}: that model has no linear skip path to start from")
    return Source(
        given,
        model_dir,
        spec,
        weight,
        bias,
        columns,
        config,
        hashlib.sha256(raw).hexdigest(),
    )


def source_data(cfg: RunConfig) -> str | None:
    """The data the source of ``cfg``'s transfer start was fitted on, if it says (for notes)."""
    if cfg.model.skip_init != "transfer" or cfg.model.skip_from is None:
        return None
    try:  # only its config: the notes need no weights
        return _data_path(_raw_config(_model_dir(Path(cfg.model.skip_from).expanduser())))
    except (OSError, yaml.YAMLError):
        return None


def _shape(data: ForecastData, quantiles: int) -> tuple[int, int, int]:
    """(outputs without quantiles, quantiles, inputs) of this run's skip path."""
    n_in = data.context_length * data.series_channels + data.horizon * len(data.known_cols)
    return data.horizon * data.series_targets, quantiles, n_in


def _differences(src: Source, cfg: RunConfig, data: ForecastData, log: Log) -> list[str]:
    quantiles = list(cfg.model.quantiles)
    out = [
        f"{key} {src.spec.get(key)} there, {here} here"
        for key, here in (
            ("context_length", data.context_length),
            ("horizon", data.horizon),
            ("quantiles", quantiles),
        )
        if src.spec.get(key) != here
    ]
    for kind, there, here in (
        ("known columns", src.columns.known, data.known_cols),
        ("past covariates", src.columns.past, data.past_cols),
    ):
        if there != here:
            out.append(f"{kind} {there} there, {here} here")
    several = not data.channel_independent and data.n_targets > 1
    if several and src.columns.targets != data.target_cols:  # each target's own weights
        out.append(f"targets {src.columns.targets} there, {data.target_cols} here")
    data_cfg = (src.config or {}).get("data")
    scaler = data_cfg.get("scaler") if isinstance(data_cfg, dict) else None
    if scaler is None:
        log(f"skip path: {src.given} has no config.yaml: its kind of scaler is not checked")
    elif scaler != cfg.data.scaler:
        out.append(f"data.scaler {scaler} there, {cfg.data.scaler} here")
    rows, q, n_in = _shape(data, max(1, len(quantiles)))
    if src.weight.shape != (rows * q, n_in) or src.bias.shape != (rows * q,):
        out.append(
            f"skip weights {tuple(src.weight.shape)} and biases {tuple(src.bias.shape)} there, "
            f"{(rows * q, n_in)} and {(rows * q,)} here"
        )
    return out


def _same_data(src: Source, cfg: RunConfig) -> bool:
    """Whether the source names this run's data file (or a folder holding it, or inside it),
    and not another series of one long file (``data.series``)."""
    if src.data_path is None or cfg.data.path is None:
        return False
    there, here = (Path(p).expanduser().resolve() for p in (src.data_path, cfg.data.path))
    same = there == here or there in here.parents or here in there.parents
    theirs = (src.config or {}).get("data") or {}
    if same and isinstance(theirs, dict) and cfg.data.series_col and theirs.get("series_col"):
        # one series each: the same data only if the same one; every series (data.series
        # unset) holds them all
        if cfg.data.series is None or theirs.get("series") is None:
            return True
        ours = (cfg.data.series_col, cfg.data.series)
        return (theirs.get("series_col"), theirs.get("series")) == ours
    return same


def transferred(
    cfg: RunConfig, data: ForecastData, log: Log, saved: Path | None = None
) -> tuple[LinearFit, np.ndarray]:
    """(the fit on this run's flattened inputs, (Q, H*T) offsets) that ``init_skip`` turns into
    the source's skip layer exactly. Refused, naming each difference, unless the source
    forecasts from the same inputs; under privacy.dp also when it was fitted on this run's
    own data. ``saved``: where the start is kept for a resume."""
    assert cfg.model.skip_from is not None
    given = Path(cfg.model.skip_from).expanduser()
    rows, q, n_in = _shape(data, max(1, len(cfg.model.quantiles)))
    kept = _load(saved, given, (n_in, rows))
    if kept is not None:
        fit, offsets, digest = kept
        try:
            changed = read_source(cfg.model.skip_from).digest != digest
        except ConfigError:
            changed = True
        since = f"; {given} has changed or gone since" if changed else ""
        log(
            f"skip path: transferred from {given}, kept from {saved} (the start this run "
            f"trained from{since}), weights frozen"
        )
        return fit, offsets
    src = read_source(cfg.model.skip_from)
    where = f"model.skip_from={src.given}"
    if cfg.privacy.dp.enabled and _same_data(src, cfg):
        raise ConfigError(
            f"{where} was fitted on {src.data_path}, this run's own data: under privacy.dp the "
            "start must come from other, public data (or use model.skip_init=seasonal)"
        )
    if differ := _differences(src, cfg, data, log):
        raise ConfigError(
            f"{where} forecasts from other inputs: "
            + "; ".join(differ)
            + ". Start from a run with the same context, horizon, quantiles, columns and scaler"
        )
    per_q = src.weight.reshape(rows, q, n_in)
    if not np.array_equal(per_q, np.broadcast_to(per_q[:, :1], per_q.shape)):
        raise ConfigError(
            f"{where}: its skip weights differ between quantiles (trained from "
            "model.skip_init=random); start from a run whose skip path started at a ridge, a "
            "seasonal naive or a transfer (frozen weights)"
        )
    per_out = src.bias.astype(np.float64).reshape(rows, q)
    quantiles = list(cfg.model.quantiles)
    y_mean = per_out[:, quantiles.index(0.5) if quantiles else 0]
    fit = LinearFit(per_q[:, 0].T.astype(np.float64), np.zeros(n_in), y_mean, 0.0, 0.0)
    offsets = (per_out - y_mean[:, None]).T
    if saved is not None and ranks.is_main():
        _save(saved, fit, offsets, src)
    fitted_on = f" on {src.data_path}" if src.data_path else ""
    log(
        f"skip path: transferred from {src.given} (its skip path as trained there{fitted_on}, "
        f"heads sha256 {src.digest[:12]}: none of this run's rows), weights frozen"
    )
    return fit, offsets


def _save(path: Path, fit: LinearFit, offsets: np.ndarray, src: Source) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # before the first checkpoint
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    np.savez(
        tmp,
        weight=fit.weight,
        y_mean=fit.y_mean,
        offsets=offsets,
        digest=src.digest,
        given=str(src.given),
    )
    os.replace(tmp, path)


def _load(
    path: Path | None, given: Path, shape: tuple[int, int]
) -> tuple[LinearFit, np.ndarray, str] | None:
    """The saved start, if it came from ``given`` in this shape (else None: read the source)."""
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path) as z:
            if str(z["given"]) != str(given) or z["weight"].shape != shape:
                return None
            fit = LinearFit(z["weight"], np.zeros(shape[0]), z["y_mean"], 0.0, 0.0)
            return fit, z["offsets"], str(z["digest"])
    except (OSError, KeyError, ValueError):
        return None  # damaged: read the source again
