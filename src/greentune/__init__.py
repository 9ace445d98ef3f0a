"""greentune: fine-tune pretrained transformers for the grid, with the energy bill of each phase.

The Python API (docs/api.md)::

    import greentune as gt

    run = gt.run(gt.load_config("configs/forecast/vic_lora.yaml", ["train.epochs=2"]))
    run.metrics.table()                    # every model's scores and cost, a DataFrame
    run.energy_by_phase()                  # Wh and gCO2e per phase
    model = gt.Predictor.from_run(run)     # load once ...
    model.predict(history)                 # ... DataFrame in, DataFrame out
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from greentune.config import RunConfig, build_config, load_config
from greentune.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    EnergyError,
    GreentuneError,
    ModelError,
)
from greentune.results import ModelResult, RunMetrics
from greentune.rundir import RunDir

if TYPE_CHECKING:  # loaded on first use: ``import greentune`` stays light (no torch)
    from greentune.energy.ledger import Ledger
    from greentune.quiet import quiet_libraries
    from greentune.tasks import TASKS, Predictor, ensemble
    from greentune.train.callbacks import CALLBACKS, Callback
    from greentune.train.run import run

__version__ = "0.1.0"

__all__ = [
    "CALLBACKS",
    "TASKS",
    "Callback",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EnergyError",
    "GreentuneError",
    "Ledger",
    "ModelError",
    "ModelResult",
    "Predictor",
    "RunConfig",
    "RunDir",
    "RunMetrics",
    "__version__",
    "build_config",
    "ensemble",
    "load_config",
    "quiet_libraries",
    "run",
]

_LAZY = {
    "run": ("greentune.train.run", "run"),
    "Predictor": ("greentune.tasks", "Predictor"),
    "TASKS": ("greentune.tasks", "TASKS"),
    "ensemble": ("greentune.tasks", "ensemble"),
    "Callback": ("greentune.train.callbacks", "Callback"),
    "CALLBACKS": ("greentune.train.callbacks", "CALLBACKS"),
    "Ledger": ("greentune.energy.ledger", "Ledger"),
    "quiet_libraries": ("greentune.quiet", "quiet_libraries"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'greentune' has no attribute {name!r}")
