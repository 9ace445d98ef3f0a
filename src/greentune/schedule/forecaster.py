"""What a carbon-intensity forecaster offers the planner, and their registry (a leaf:
``greentune.schedule.forecast`` registers the built-ins, ``forecast_run`` the greentune one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import pandas as pd

from greentune.registry import Registry

__all__ = ["FORECASTERS", "Forecaster"]


class Forecaster(Protocol):
    name: str
    uses_future: bool
    """True for the replay models that read the trace after the issue slot."""

    def fit(self, values: np.ndarray, times: pd.DatetimeIndex, slots_per_day: int) -> None:
        """Learn from a history (no future values)."""
        ...

    def predict(
        self, values: np.ndarray, times: pd.DatetimeIndex, issue: int, horizon: int
    ) -> np.ndarray:
        """Forecast slots issue .. issue + horizon - 1; ``times`` covers them too."""
        ...


FORECASTERS = Registry[Callable[..., Forecaster]]("carbon forecaster")
