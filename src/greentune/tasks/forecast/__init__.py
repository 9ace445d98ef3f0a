"""Forecasting: windows of a series in, quantile forecasts out (``greentune run`` default)."""

from greentune.tasks.base import TASKS
from greentune.tasks.forecast.predictor import ForecastPredictor
from greentune.tasks.forecast.task import ForecastTask

__all__ = ["ForecastPredictor", "ForecastTask"]

TASKS.add("forecast", ForecastTask())
