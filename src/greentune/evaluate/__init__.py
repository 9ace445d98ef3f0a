"""Metrics, baselines and comparison tables: every model scored on the same test windows."""

from greentune.evaluate import lgbm  # noqa: F401  registers the lightgbm baseline
