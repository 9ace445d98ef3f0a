"""What a run found, as typed values: forecasts, scores per model, training and energy summaries.

``RunMetrics`` is the content of a run's ``metrics.json`` (docs/run-dir.md documents every key);
``to_dict`` writes exactly that layout and ``from_dict`` reads it back, keeping keys it does not
know, so a file written by a newer greentune survives a round trip through an older one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

METRICS_SCHEMA_VERSION = 1


@dataclass
class Forecast:
    """Forecasts for N origins in data units: point and quantiles are (N, H, T)."""

    point: np.ndarray
    quantiles: dict[float, np.ndarray] | None = None
    fit_s: float = 0.0
    predict_s: float = 0.0


@dataclass(frozen=True)
class Quality:
    """The metric a task is judged by (the comparison's headline and the quality guard's)."""

    metric: str
    """Key in every model's scores: mape (forecast), macro_f1 (classify)."""
    higher_is_better: bool
    skill_reference: str | None = None
    """A baseline whose score defines skill = 1 - metric / reference (forecast: weekly naive).
    With one, results get ``skill_per_kwh``; without, ``<metric>_per_kwh``."""

    def worsening(self, value: float, reference: float) -> float:
        """How much worse ``value`` is than ``reference``, relative (negative: better)."""
        worse = reference - value if self.higher_is_better else value - reference
        return worse / abs(reference) if reference else worse


# ----------------------------------------------------------------------------- one model


def _written(values: dict[str, Any], read: tuple[str, ...]) -> dict[str, Any]:
    """What ``to_dict`` writes: the values that are set, plus those read from a file even when
    null, in the order they were read (new keys after): a file read and written back is the
    same file."""
    kept = {k: v for k, v in values.items() if v is not None or k in read}
    return {**{k: kept[k] for k in read if k in kept}, **kept}


@dataclass
class EnergyBill:
    """What one model cost in the run's ledger: fitting it and predicting the test split."""

    fit_wh: float
    fit_g: float | None
    predict_wh: float
    predict_g: float | None
    energy_wh: float
    emissions_g: float | None
    wh_per_1k_predictions: float | None = None
    g_per_1k_predictions: float | None = None
    energy_kind: str | None = None
    """How the billed windows' energy was obtained: measured, model, estimated or mixed."""


_BILL_KEYS = tuple(f.name for f in dataclasses.fields(EnergyBill))
_RESULT_KEYS = ("confusion", "fit_s", "predict_s", "predictions", "energy_windows")


@dataclass
class ModelResult:
    """One row of ``metrics.json``'s ``test``: a model's scores on the test split and its cost."""

    scores: dict[str, float]
    """Quality metrics: mae, rmse, mse, mape, smape, mase, pinball, coverage, interval
    (forecast) or accuracy, macro_f1 (classify)."""
    confusion: list[list[int]] | None = None
    """Classification: rows are the true class, columns the predicted one."""
    fit_s: float | None = None
    predict_s: float | None = None
    predictions: int | None = None
    """Test predictions made (forecast origins or texts)."""
    energy_windows: dict[str, dict[str, float]] | None = None
    """Ledger windows this model is billed for: {'fit'|'predict': {window: share}}."""
    bill: EnergyBill | None = None
    per_kwh: dict[str, float] = field(default_factory=dict)
    """skill_per_kwh (forecast) or macro_f1_per_kwh (classify)."""
    read_keys: tuple[str, ...] = field(default=(), repr=False, compare=False)
    """The keys of the row this was read from, in order (``to_dict`` keeps them)."""

    def score(self, name: str) -> float:
        value = self.scores.get(name)
        return math.nan if value is None else float(value)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelResult:
        known = {*_RESULT_KEYS, *_BILL_KEYS}
        scores = {k: v for k, v in raw.items() if k not in known and not k.endswith("_per_kwh")}
        per_kwh = {k: v for k, v in raw.items() if k.endswith("_per_kwh")}
        bill = None
        if "energy_wh" in raw:
            bill = EnergyBill(**{k: raw.get(k) for k in _BILL_KEYS})  # type: ignore[arg-type]
        return cls(
            scores=scores,
            confusion=raw.get("confusion"),
            fit_s=raw.get("fit_s"),
            predict_s=raw.get("predict_s"),
            predictions=raw.get("predictions"),
            energy_windows=raw.get("energy_windows"),
            bill=bill,
            per_kwh=per_kwh,
            read_keys=tuple(raw),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.scores)
        out.update({key: getattr(self, key) for key in _RESULT_KEYS})
        if self.bill is not None:
            out.update(dataclasses.asdict(self.bill))
        out.update(self.per_kwh)
        return _written(out, self.read_keys)


# ----------------------------------------------------------------------------- the run


@dataclass
class TrainingSummary:
    """What ``metrics.json`` says about the training of the run's model."""

    steps: int
    """Optimizer steps taken."""
    epochs_run: int | None = None
    best_epoch: int | None = None
    """-1: no epoch beat the starting point on validation, which was kept."""
    best_val_loss: float | None = None
    """The validation loss of the kept model."""
    selected_on: str | None = None
    """What chose the kept model among the validated ones (``train.select_on``); None in runs
    made before the option existed, which were chosen on loss."""
    stopped_early: bool | None = None
    stop_reason: str | None = None
    """Why training ended early: 'early stopping', 'time budget', 'energy budget'; None: it
    ran its planned epochs or steps."""
    train_s: float = 0.0
    samples: int | None = None
    samples_per_s: float = 0.0
    trainable_parameters: int = 0
    total_parameters: int = 0
    loss_curve: list[float] = field(default_factory=list)
    """Loss of every optimizer step (rounded to 6 digits)."""
    val_curve: list[dict[str, float]] | None = None
    """One row per validation: epoch (-1 before training), step, val_loss (classifiers also
    val_accuracy and val_macro_f1; forecasters selected on MAPE also val_mape)."""
    extra: dict[str, Any] = field(default_factory=dict)
    read_keys: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainingSummary:
        return cls(**_split(cls, raw))

    def to_dict(self) -> dict[str, Any]:
        return _record_dict(self)


@dataclass
class EnergySummary:
    """The run's own cost and the greenest model within the quality target."""

    kinds: list[str]
    """measured, model or both: how the joules were obtained."""
    carbon: str | None
    """The carbon-intensity source, in words."""
    run_wh: float
    run_g: float | None
    by_phase_wh: dict[str, float]
    target: float | None = None
    quality_metric: str | None = None
    best: str | None = None
    greenest: str | None = None
    greenest_cost: str | None = None
    """emissions_g, or energy_wh when some emissions are unknown."""
    energy_ratio_to_best: float | None = None
    chosen_on: str | None = None
    """'validation' when best and greenest were chosen by validation scores, else 'test'."""
    extra: dict[str, Any] = field(default_factory=dict)
    read_keys: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EnergySummary:
        return cls(**_split(cls, raw))

    def to_dict(self) -> dict[str, Any]:
        out = _record_dict(self)
        if self.greenest is not None:  # the verdict: its ratio is written even when unknown
            out.setdefault("energy_ratio_to_best", self.energy_ratio_to_best)
        return out


def _split(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments from a mapping: known fields, the rest in ``extra``."""
    names = {f.name for f in dataclasses.fields(cls)} - {"extra", "read_keys"}
    known = {k: v for k, v in raw.items() if k in names}
    extra = {k: v for k, v in raw.items() if k not in names}
    return {**known, "extra": extra, "read_keys": tuple(raw)}


def _record_dict(record: Any) -> dict[str, Any]:
    values = {
        f.name: getattr(record, f.name)
        for f in dataclasses.fields(record)
        if f.name not in ("extra", "read_keys")
    }
    return _written({**values, **record.extra}, record.read_keys)


@dataclass
class RunMetrics:
    """``metrics.json``: every model's test scores, the training, the data and the energy."""

    task: str
    model: str
    """Name of the fine-tuned model's row in ``test``."""
    test: dict[str, ModelResult]
    """The model and every baseline on the same test windows (or texts)."""
    training: TrainingSummary | None = None
    data: dict[str, Any] | None = None
    """Forecast: source, rows, step, start, end, val_start, test_start, windows, notes, ..."""
    labels: list[str] | None = None
    """Classification: class names; ids index this list."""
    energy: EnergySummary | None = None
    """Present when the run was metered."""
    compression: dict[str, Any] | None = None
    """A compressed variant: its method, options and status."""
    privacy: dict[str, Any] | None = None
    """Under privacy.dp: epsilon spent (per epoch too), delta, noise, the privacy unit, and
    which rows of ``test`` are non-private references."""
    federated: dict[str, Any] | None = None
    """A federated run (``greentune federate``): per-client scores, rounds, bytes, epsilon."""
    validation: dict[str, dict[str, float]] | None = None
    """Per row of ``test``: its scores on the validation windows. The greenest-model choice
    reads these when every row has one (chosen on validation, reported on test)."""
    ensembles: dict[str, Any] | None = None
    """Per ensemble row of ``test``: its members and, when weighted, the weights per horizon
    step (fitted on validation)."""
    by_target: dict[str, dict[str, dict[str, float]]] | None = None
    """Forecasts of several targets (every series of a long file, a multivariate file): per
    row of ``test`` and per target, its test scores (the rows' own scores pool the targets)."""
    schema_version: int = METRICS_SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know, kept as read."""

    @property
    def result(self) -> ModelResult:
        """The fine-tuned model's row."""
        return self.test[self.model]

    def table(self) -> pd.DataFrame:
        """One row per model (index), one column per score and cost."""
        rows = {name: r.to_dict() for name, r in self.test.items()}
        frame = pd.DataFrame.from_dict(rows, orient="index")
        return frame.drop(columns=["confusion", "energy_windows"], errors="ignore")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunMetrics:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        training, energy = raw.get("training"), raw.get("energy")
        return cls(
            task=raw["task"],
            model=raw["model"],
            test={name: ModelResult.from_dict(row) for name, row in raw["test"].items()},
            training=TrainingSummary.from_dict(training) if training else None,
            data=raw.get("data"),
            labels=raw.get("labels"),
            energy=EnergySummary.from_dict(energy) if energy else None,
            compression=raw.get("compression"),
            privacy=raw.get("privacy"),
            federated=raw.get("federated"),
            validation=raw.get("validation"),
            ensembles=raw.get("ensembles"),
            by_target=raw.get("by_target"),
            schema_version=int(raw.get("schema_version", METRICS_SCHEMA_VERSION)),
            extra={k: v for k, v in raw.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "task": self.task,
            "model": self.model,
        }
        if self.labels is not None:
            out["labels"] = self.labels
        out["test"] = {name: r.to_dict() for name, r in self.test.items()}
        if self.training is not None:
            out["training"] = self.training.to_dict()
        if self.data is not None:
            out["data"] = self.data
        if self.energy is not None:
            out["energy"] = self.energy.to_dict()
        if self.compression is not None:
            out["compression"] = self.compression
        if self.privacy is not None:
            out["privacy"] = self.privacy
        if self.federated is not None:
            out["federated"] = self.federated
        if self.validation is not None:
            out["validation"] = self.validation
        if self.ensembles is not None:
            out["ensembles"] = self.ensembles
        if self.by_target is not None:
            out["by_target"] = self.by_target
        out.update(self.extra)
        return out


def energy_windows(
    own: str, fit_s: float, predict_s: float, also_fit: tuple[str, ...] = ()
) -> dict[str, dict[str, float]]:
    """The ledger windows a model that fits and predicts inside one window ``own`` is billed
    for: its energy is split between fit and predict in proportion to their wall times, and
    ``also_fit`` windows (work it reuses, such as the ridge fit) are billed whole to its fit."""
    busy_s = fit_s + predict_s
    fit_share = fit_s / busy_s if busy_s > 0 else 0.0
    fit = {own: fit_share, **dict.fromkeys(also_fit, 1.0)}
    return {"fit": fit, "predict": {own: 1.0 - fit_share}}
