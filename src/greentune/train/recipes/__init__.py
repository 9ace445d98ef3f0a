"""The recipes, one per task; importing this package registers them in ``RECIPES``."""

from greentune.train.recipes import classify, forecast  # noqa: F401
