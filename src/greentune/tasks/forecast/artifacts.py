"""A forecasting run's ``model/`` folder: the network (or a compressed variant of it), the
scaler fitted on the training rows, and which columns are targets and covariates.

    model/greentune_model.json, backbone/, adapter/, heads.safetensors   (models/forecaster.py)
    model/scaler.json     {"columns": [...], "mean": [...], "std": [...]}
    model/columns.json    {"targets": [...], "past": [...], "known": [...]}
    model/variant.json    only in a compressed variant (models/variants.py)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from greentune.data.windows import ForecastData, Scaler
from greentune.errors import CheckpointError
from greentune.io import staged_dir, write_json
from greentune.models.forecaster import Forecaster, load_forecaster, save_forecaster
from greentune.models.variants import load_forecast_variant, read_variant
from greentune.tasks.forecast.hybrid import HybridBase

SCALER_FILE = "scaler.json"
COLUMNS_FILE = "columns.json"


@dataclass(frozen=True)
class Columns:
    """The model's input columns, in the scaled matrix's order: targets, past, known."""

    targets: list[str]
    past: list[str]
    """Covariates known only up to the forecast origin."""
    known: list[str]
    """Covariates (and calendar features) known over the horizon too."""

    @property
    def all(self) -> list[str]:
        return [*self.targets, *self.past, *self.known]


def save_model(
    model: Forecaster,
    tokenizer: Any,
    data: ForecastData,
    model_dir: Path,
    hybrid: HybridBase | None = None,
) -> None:
    """Write ``model_dir`` as a whole: a crash leaves the previous folder (or none)."""
    with staged_dir(model_dir) as tmp:
        save_forecaster(model, tmp, tokenizer)
        if hybrid is not None:
            hybrid.save(tmp)
        write_json(tmp / SCALER_FILE, data.scaler.to_dict(data.columns))
        columns = Columns(data.target_cols, data.past_cols, data.known_cols)
        (tmp / COLUMNS_FILE).write_text(json.dumps(asdict(columns)))


def load_model(model_dir: Path) -> tuple[Any, Any]:
    """(network, tokenizer or None): the trained torch model, or a compressed variant of it
    (int8, ONNX) behind the same call interface."""
    if read_variant(model_dir)["format"] != "torch":
        model = load_forecast_variant(model_dir)
    else:
        model = load_forecaster(model_dir)
    tokenizer = None
    if model.spec.encoder == "text":  # the tokenizer saved with the run: no hub needed
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir / "backbone", local_files_only=True)
    return model, tokenizer


def load_scaler(model_dir: Path) -> Scaler:
    return Scaler.from_dict(_read(model_dir / SCALER_FILE))


def load_columns(model_dir: Path) -> Columns:
    raw = _read(model_dir / COLUMNS_FILE)
    return Columns(list(raw["targets"]), list(raw["past"]), list(raw["known"]))


def _read(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except OSError:
        raise CheckpointError(f"{path} is missing; the run's model/ folder is incomplete") from None
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is damaged ({exc})") from None
