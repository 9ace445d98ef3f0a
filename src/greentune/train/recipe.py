"""What a recipe gets and the registry of recipes (a leaf: ``greentune.train.recipes`` fills it).

A recipe wires one task's components top to bottom: data, model, training, test, baselines,
save. It returns the run's metrics; ``greentune.train.run`` bills their energy and writes them.
Nothing outside ``greentune.train`` imports a recipe (tests/unit/test_imports.py checks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from greentune.config import RunConfig
from greentune.registry import Registry
from greentune.results import RunMetrics
from greentune.rundir import RunDir
from greentune.train.callbacks import Callback, EnergyWindows, Window, no_window

Log = Callable[[str], None]


@dataclass
class RecipeContext:
    cfg: RunConfig
    """Resolved: the source's defaults written in."""
    run: RunDir
    log: Log
    """Console and log.txt (silent on ranks other than 0)."""
    resume: bool = False
    """Continue from the newest checkpoint in ``run.checkpoint_dir``."""
    callbacks: list[Callback] = field(default_factory=list)
    """For the training of the run's model: energy windows, progress, train.callbacks, the
    caller's."""
    window: Window = no_window
    """The meter's window, for the phases outside the training loop."""
    budget: Callable[[], list[Callback]] = list
    """Fresh budget callbacks (train.budget_s / budget_wh) for each network trained; the run's
    own are already in ``callbacks``."""

    def baseline_callbacks(self) -> list[Callback]:
        """For a network trained as a baseline: its epochs metered, its own budget, nothing
        shown."""
        return [EnergyWindows(self.window), *self.budget()]


Recipe = Callable[[RecipeContext], RunMetrics]
RECIPES: Registry[Recipe] = Registry("recipe")
