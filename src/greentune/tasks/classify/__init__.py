"""Text classification on the same engine: texts in, labels and probabilities out."""

from greentune.tasks.base import TASKS
from greentune.tasks.classify.predictor import ClassifyPredictor
from greentune.tasks.classify.task import ClassifyTask

__all__ = ["ClassifyPredictor", "ClassifyTask"]

TASKS.add("classify", ClassifyTask())
