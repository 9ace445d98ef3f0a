"""Carbon-intensity forecasts on a slot grid, and how wrong they were.

A forecaster sees a slot-level array ``values`` and an issue slot ``i``; it returns ``horizon``
slots from ``i`` on. Honest forecasters read only ``values[:i]`` (the history); the two replay
models read the future on purpose and say so in their names:

- ``perfect``: the trace itself (an upper bound; replays only);
- ``noisy``: the trace plus N(0, (error x mean)^2) noise drawn once per seed, the forecast-error
  model of Let's Wait Awhile (Wiesner et al., 2021); spec ``noisy:0.05``;
- ``seasonal-naive`` (same slot yesterday), ``weekly-naive`` (same slot last week);
- ``lightgbm``: one direct multi-lead model on lags (same time 1, 2 and 7 days back, last value,
  last day's mean), time of day, weekday and lead, fitted on the history before the issue time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from greentune.errors import ScheduleError
from greentune.schedule import forecast_run  # noqa: F401  (registers "greentune")
from greentune.schedule.forecaster import FORECASTERS, Forecaster

__all__ = ["FORECASTERS", "ForecastError", "Forecaster", "forecast_error", "make_forecaster"]


@dataclass
class Perfect:
    name: str = "perfect"
    uses_future: bool = True

    def fit(self, values: np.ndarray, times: pd.DatetimeIndex, slots_per_day: int) -> None:
        pass

    def predict(
        self, values: np.ndarray, times: pd.DatetimeIndex, issue: int, horizon: int
    ) -> np.ndarray:
        return _future(values, issue, horizon, self.name)


class Noisy:
    """The trace plus fixed per-slot Gaussian noise, sd = ``error`` x the trace's mean."""

    uses_future = True

    def __init__(self, error: float = 0.05, seed: int = 0) -> None:
        if not 0 <= error < 10:
            raise ScheduleError(
                f"noisy forecast error must be a fraction such as 0.05, got {error}"
            )
        self.error, self.seed = float(error), int(seed)
        self.name = f"noisy:{self.error:g}"
        self._unit: np.ndarray = np.zeros(0)

    def fit(self, values: np.ndarray, times: pd.DatetimeIndex, slots_per_day: int) -> None:
        pass

    def predict(
        self, values: np.ndarray, times: pd.DatetimeIndex, issue: int, horizon: int
    ) -> np.ndarray:
        # One draw per slot of the array for this seed, as LWA perturbs the whole year once per
        # repetition: forecasts issued at different times agree about the same slot.
        if len(self._unit) != len(values):
            self._unit = np.random.default_rng(self.seed).standard_normal(len(values))
        sd = self.error * float(np.nanmean(values))
        lo, hi = issue, min(issue + horizon, len(values))
        return _future(values[lo:hi] + sd * self._unit[lo:hi], 0, horizon, self.name)


class SeasonalNaive:
    """The value one season earlier, repeated: y[t] = y[t - k*season], k the smallest known."""

    uses_future = False

    def __init__(self, days: int = 1) -> None:
        self.days = days
        self.name = "seasonal-naive" if days == 1 else "weekly-naive"
        self._slots_per_day = 24

    def fit(self, values: np.ndarray, times: pd.DatetimeIndex, slots_per_day: int) -> None:
        self._slots_per_day = slots_per_day

    def predict(
        self, values: np.ndarray, times: pd.DatetimeIndex, issue: int, horizon: int
    ) -> np.ndarray:
        season = self.days * self._slots_per_day
        target = issue + np.arange(horizon)
        source = target - season * ((target - issue) // season + 1)
        _need_history(source.min(), self.name)
        return values[source]


class LightGbmForecaster:
    """A direct multi-lead LightGBM model; lead is a feature, so one model serves every lead."""

    uses_future = False
    name = "lightgbm"

    def __init__(self, max_lead_days: int = 7, rounds: int = 200, seed: int = 0) -> None:
        self.max_lead_days, self.rounds, self.seed = max_lead_days, rounds, seed
        self._booster: Any = None
        self._spd = 24

    def fit(self, values: np.ndarray, times: pd.DatetimeIndex, slots_per_day: int) -> None:
        import lightgbm as lgb  # imported here: only this forecaster needs it

        self._spd = spd = slots_per_day
        max_lead = self.max_lead_days * spd
        first = 7 * spd + 2 * spd  # room for the deepest lag of the longest lead
        if len(values) < first + max_lead + spd:
            raise ScheduleError(
                f"lightgbm forecaster needs at least {(first + max_lead + spd) // spd} days of "
                f"history, got {len(values) / spd:.1f}; use seasonal-naive or a longer history"
            )
        rng = np.random.default_rng(self.seed)
        issues = np.arange(first, len(values) - 1, max(1, spd // 4))
        rows_i = np.repeat(issues, 24)
        rows_h = rng.integers(0, max_lead, size=len(rows_i))
        keep = rows_i + rows_h < len(values)
        rows_i, rows_h = rows_i[keep], rows_h[keep]
        x = self._features(values, times, rows_i, rows_h)
        y = values[rows_i + rows_h]
        ok = np.isfinite(y) & np.isfinite(x).all(axis=1)
        params = {
            "objective": "l1",
            "learning_rate": 0.05,
            "num_leaves": 31,
            "verbose": -1,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "n_jobs": 1,
        }
        self._booster = lgb.train(params, lgb.Dataset(x[ok], y[ok]), num_boost_round=self.rounds)

    def predict(
        self, values: np.ndarray, times: pd.DatetimeIndex, issue: int, horizon: int
    ) -> np.ndarray:
        if self._booster is None:
            raise ScheduleError("lightgbm forecaster used before fit")
        _need_history(issue - 9 * self._spd, self.name)
        h = np.arange(horizon)
        x = self._features(values, times, np.full(horizon, issue), h)
        return np.asarray(self._booster.predict(x), dtype=float)

    def predict_many(
        self, values: np.ndarray, times: pd.DatetimeIndex, issues: np.ndarray, horizons: np.ndarray
    ) -> list[np.ndarray]:
        """``predict`` for many issue slots in one call (the simulator's thousands of jobs)."""
        if self._booster is None:
            raise ScheduleError("lightgbm forecaster used before fit")
        _need_history(int(np.min(issues)) - 9 * self._spd, self.name)
        lead = np.concatenate([np.arange(h) for h in horizons])
        x = self._features(values, times, np.repeat(issues, horizons), lead)
        flat = np.asarray(self._booster.predict(x), dtype=float)
        return np.split(flat, np.cumsum(horizons)[:-1])

    def _features(
        self, values: np.ndarray, times: pd.DatetimeIndex, issue: np.ndarray, lead: np.ndarray
    ) -> np.ndarray:
        spd = self._spd
        target = issue + lead
        back = spd * (lead // spd + 1)  # the most recent same-time-of-day value before issue
        day1, day2 = values[target - back], values[target - back - spd]
        week_src = np.where(lead < 7 * spd, target - 7 * spd, target - back)
        cums = np.concatenate([[0.0], np.nancumsum(values)])
        day_mean = (cums[issue] - cums[issue - spd]) / spd
        tt = times[np.minimum(target, len(times) - 1)]
        slot_of_day = (tt.hour * 60 + tt.minute).to_numpy() / 1440.0
        return np.column_stack(
            [
                day1,
                day2,
                values[week_src],
                values[issue - 1],
                day_mean,
                slot_of_day,
                tt.day_of_week.to_numpy(),
                lead / spd,
            ]
        )


def _future(values: np.ndarray, issue: int, horizon: int, name: str) -> np.ndarray:
    out = values[issue : issue + horizon]
    if len(out) < horizon or not np.isfinite(out).all():
        raise ScheduleError(
            f"the {name} forecast replays the trace, which does not cover the planning window; "
            "use a trace that spans it or an honest forecaster (seasonal-naive, lightgbm)"
        )
    return out


def _need_history(first_index: int, name: str) -> None:
    if first_index < 0:
        raise ScheduleError(
            f"the {name} forecast needs more history before the planning time; raise "
            "schedule.history or use a trace that starts earlier"
        )


def _noisy(arg: str) -> dict[str, Any]:
    error, _, seed = arg.partition(",")
    try:
        return {"error": float(error or 0.05), "seed": int(seed or 0)}
    except ValueError:
        raise ScheduleError(
            f"noisy forecast takes ERROR[,SEED], e.g. noisy:0.05, got {arg!r}"
        ) from None


FORECASTERS.add("perfect", lambda arg="": Perfect())
FORECASTERS.add("noisy", lambda arg="": Noisy(**_noisy(arg)))
FORECASTERS.add("seasonal-naive", lambda arg="": SeasonalNaive(1))
FORECASTERS.add("weekly-naive", lambda arg="": SeasonalNaive(7))
FORECASTERS.add("lightgbm", lambda arg="": LightGbmForecaster())


def make_forecaster(spec: str) -> Forecaster:
    """'seasonal-naive', 'lightgbm', 'noisy:0.05', 'noisy:0.05,3', 'perfect'."""
    name, _, arg = spec.partition(":")
    if name not in FORECASTERS:
        raise ScheduleError(
            f"unknown carbon forecaster {name!r}; valid: {', '.join(FORECASTERS.names())}"
        )
    return FORECASTERS.get(name)(arg)


@dataclass(frozen=True)
class ForecastError:
    """Error of forecasts against what happened, over every forecast slot."""

    mape_pct: float
    mae_g_per_kwh: float
    bias_g_per_kwh: float
    slots: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "mape_pct": self.mape_pct,
            "mae_g_per_kwh": self.mae_g_per_kwh,
            "bias_g_per_kwh": self.bias_g_per_kwh,
            "slots": self.slots,
        }


def forecast_error(actual: np.ndarray, forecast: np.ndarray) -> ForecastError:
    a, f = np.asarray(actual, float).ravel(), np.asarray(forecast, float).ravel()
    ok = np.isfinite(a) & np.isfinite(f)
    a, f = a[ok], f[ok]
    if len(a) == 0:
        return ForecastError(math.nan, math.nan, math.nan, 0)
    nz = np.abs(a) > 1e-9
    mape = float(np.mean(np.abs(f[nz] - a[nz]) / np.abs(a[nz])) * 100) if nz.any() else math.nan
    return ForecastError(mape, float(np.mean(np.abs(f - a))), float(np.mean(f - a)), len(a))
