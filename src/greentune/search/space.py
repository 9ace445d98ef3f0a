"""A search space: config keys and the values a trial may give them, read from YAML.

    train.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
    peft.method: [lora, ln, ia3]                  # a list: one of these
    peft.r: {type: int, low: 4, high: 16, step: 4}
    data.context_length: {type: categorical, choices: [168, 336]}

Every key must be a setting of the config; a trial's values are checked by building its config,
so a value the config refuses names the key before any trial runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from greentune.config import RunConfig, build_config, to_dict
from greentune.errors import ConfigError

KINDS = ("float", "int", "categorical")


@dataclass(frozen=True)
class Dimension:
    """One config key's range."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna trial gives this key."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        low, high = float(self.low or 0.0), float(self.high or 0.0)
        if self.kind == "int":
            step = int(self.step or 1)
            return trial.suggest_int(self.key, int(low), int(high), step=step, log=self.log)
        return trial.suggest_float(self.key, low, high, log=self.log, step=self.step)

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        if value is None:
            return False
        return isinstance(value, int | float) and self.low <= value <= self.high  # type: ignore[operator]


def load_space(path: str | Path) -> list[Dimension]:
    """The dimensions in a YAML file, or a ``ConfigError`` naming the file and key."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"search space {p} does not exist")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"{p} must map config keys to ranges, e.g. 'train.lr: {{type: float, "
            "low: 1.0e-4, high: 3.0e-3, log: true}}'"
        )
    return [_dimension(p, str(key), spec) for key, spec in raw.items()]


def _dimension(path: Path, key: str, spec: Any) -> Dimension:
    where = f"{path}: {key}"
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a list of choices or a mapping with 'type'")
    kind = spec.get("type")
    if kind not in KINDS:
        raise ConfigError(f"{where}: type must be one of {', '.join(KINDS)}, got {kind!r}")
    unknown = set(spec) - {"type", "low", "high", "log", "step", "choices"}
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: categorical needs a non-empty list 'choices'")
        nested = [c for c in choices if not isinstance(c, str | int | float | bool | None)]
        if nested:  # what Optuna stores: numbers, strings, booleans, null
            raise ConfigError(
                f"{where}: choices must be numbers, strings, booleans or null, got {nested[0]!r}"
            )
        return Dimension(key, kind, choices=tuple(choices))
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{where}: {kind} needs numbers 'low' and 'high'") from None
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise ConfigError(f"{where}: log scale needs low > 0")
    step = spec.get("step")
    if step is not None and log:
        raise ConfigError(f"{where}: give step or log, not both")
    return Dimension(key, kind, low, high, log, float(step) if step is not None else None)


def trial_config(base: RunConfig, values: dict[str, Any], overrides: list[str] = ()) -> RunConfig:  # type: ignore[assignment]
    """``base`` with a trial's values (then ``overrides``), checked as any config is."""
    items = [f"{k}={json.dumps(v)}" for k, v in values.items()]
    return build_config(to_dict(base), [*items, *overrides])


def check_space(base: RunConfig, space: list[Dimension]) -> None:
    """Each key is a setting of the config and its edge values are accepted; the score the
    trials are ranked by (``eval.metric``) is not a setting to search."""
    for dim in space:
        if dim.key == "eval.metric":
            raise ConfigError(
                "search space key eval.metric: it is the score trials are compared by, not a "
                "setting to search; set it in the base config"
            )
        probes = list(dim.choices) if dim.kind == "categorical" else [dim.low, dim.high]
        for value in probes:
            if dim.kind == "int":
                value = int(value)  # type: ignore[arg-type]
            try:
                trial_config(base, {dim.key: value})
            except ConfigError as exc:
                raise ConfigError(f"search space key {dim.key} = {value!r}: {exc}") from None


def base_values(base: RunConfig, space: list[Dimension]) -> dict[str, Any] | None:
    """The base config's own value of every key, when each lies in the space (the default
    configuration as a trial), else None."""
    tree = to_dict(base)
    missing = object()
    values: dict[str, Any] = {}
    for dim in space:
        node: Any = tree
        for part in dim.key.split("."):
            node = node.get(part, missing) if isinstance(node, dict) else missing
        if node is missing or not dim.contains(node):  # a null default is a value too
            return None
        values[dim.key] = node
    return values
