"""Experiment tracking: MLflow, TensorBoard and Weights & Biases (offline), each optional.

``tracking.to: [mlflow, tensorboard]`` in a config sends the run's parameters (the flattened
config), per-step loss, validation curve, every row's test and validation scores, energy and
emissions per phase with their kind, and its files. A new backend registers a factory in
``TRACKERS`` (``greentune.tracking.base``).
"""

from greentune.tracking import backends  # noqa: F401  (registers the built-in trackers)
from greentune.tracking.base import TRACKERS, Tracker, TrackerContext, TrackingError

__all__ = ["TRACKERS", "Tracker", "TrackerContext", "TrackingError"]
