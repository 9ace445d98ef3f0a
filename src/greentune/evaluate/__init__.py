"""Metrics, baselines and comparison tables: every model scored on the same test windows."""
