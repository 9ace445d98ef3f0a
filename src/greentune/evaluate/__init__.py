"""Metrics, baselines and comparison tables: every model scored on the same test windows."""

# registers the lightgbm baseline, and nhits, patchtst, mstl, mlforecast
from greentune.evaluate import lgbm, peers  # noqa: F401
