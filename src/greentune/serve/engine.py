"""The served model: loaded once through ``Predictor.from_run``, swapped whole on reload.

A request keeps the model that checked its input (``Prepared.predictor``), so a reload while it
waits changes nothing for it; the old model is freed when its last batch is done."""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import gc
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greentune.errors import CheckpointError, GreentuneError
from greentune.rundir import RunDir
from greentune.tasks import Predictor
from greentune.tasks.ensemble_predictor import RunsPredictor


@dataclass(frozen=True)
class Loaded:
    """One loaded model and what ``GET /v1/models`` says about it."""

    predictor: Predictor
    run: RunDir
    """The run that was asked for (its ledger gets the serving energy)."""
    variant: str
    version: str
    loaded_at: str
    card: dict[str, Any] = field(default_factory=dict)
    """Test metrics and energy per 1,000 predictions of the served model, from its run."""
    row: str | None = None
    """The kept row served instead of the network (``--row``), or None."""
    row_spec: str | None = None
    """The row as asked for (``recommended`` is resolved again on every reload)."""
    variant_spec: str | None = None
    """The variant as asked for (``--variant prune-sparsity0.7``; ``variant`` is its method,
    ``prune``, which names another variant): a reload without one loads this again."""

    @property
    def task(self) -> str:
        return self.predictor.task

    def describe(self) -> dict[str, Any]:
        return {
            "run": self.run.name,
            "task": self.task,
            "variant": self.variant,
            "row": self.row or self.card.get("network") or "network",
            "version": self.version,
            "loaded_at": self.loaded_at,
            **self.card,
        }


def _card(model_run: RunDir, row: str | None = None) -> dict[str, Any]:
    try:
        metrics = model_run.metrics
    except GreentuneError:
        return {"test_metrics": {}, "energy_per_1k_predictions": None}
    result = metrics.result if row is None else metrics.test.get(row)
    if result is None:  # a LightGBM design, weighed by an ensemble but not a row of its own
        return {"test_metrics": {}, "energy_per_1k_predictions": None, "network": metrics.model}
    bill = result.bill
    kinds = metrics.energy.kinds if metrics.energy else []
    energy = None
    if bill is not None and bill.wh_per_1k_predictions is not None:
        energy = {
            "wh": bill.wh_per_1k_predictions,
            "g_co2e": bill.g_per_1k_predictions,
            "kind": "+".join(kinds) or "unknown",
            "measured_on": "the run's test split, batch size eval.batch_size",
        }
    return {
        "test_metrics": {k: v for k, v in result.scores.items() if v is not None},
        "energy_per_1k_predictions": energy,
        "network": metrics.model,
    }


def load(run_path: str | Path, variant: str | None, row: str | None = None) -> Loaded:
    """The run's model (or variant, or kept row), with its version and card; errors say what
    to do."""
    run = RunDir.open(run_path)
    run.check_finished("serve it")
    model_run = run.variant(variant)
    predictor = Predictor.from_run(run.path, variant, row)
    served = getattr(predictor, "row", None)
    spec = getattr(predictor, "row_spec", None)
    card = _card(model_run, served)
    if isinstance(predictor, RunsPredictor):  # no network of its own: its members instead
        card |= {"network": None, "members": predictor.used}
    return Loaded(
        predictor=predictor,
        run=run,
        variant=predictor.variant,
        version=predictor.version(),
        loaded_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        card=card,
        row=served,
        row_spec=spec,
        variant_spec=variant,
    )


def settle_memory() -> None:
    """After a model is loaded or replaced: collect, give freed heap back to the OS (glibc
    keeps freed arenas, and resident memory would otherwise grow by about a model per reload),
    and freeze what is left, so the collector's full passes no longer walk the model's
    objects: those passes stalled requests under load (p99 about 3x higher in
    benchmarks/serve.py)."""
    gc.unfreeze()
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    gc.freeze()


class Engine:
    """Holds the current ``Loaded``; ``reload`` builds the next one beside it, then swaps."""

    def __init__(self, loaded: Loaded) -> None:
        self._current = loaded
        self._reload_lock = threading.Lock()

    @property
    def current(self) -> Loaded:
        return self._current

    def reload(
        self, run: str | Path | None = None, variant: str | None = None, row: str | None = None
    ) -> Loaded:
        """Load ``run`` (default: the served one), ``variant`` and ``row`` (default: the served
        ones), then serve it. The task cannot change: clients of /v1/forecast would break."""
        with self._reload_lock:
            old = self._current
            target = Path(run) if run is not None else old.run.path
            new = load(
                target,
                variant if variant is not None else old.variant_spec,
                row if row is not None else old.row_spec,
            )
            if new.task != old.task:
                raise CheckpointError(
                    f"{target} is a {new.task} run; this service serves {old.task}. Start "
                    "another service for it"
                )
            self._current = new
            del old
        settle_memory()
        return new
