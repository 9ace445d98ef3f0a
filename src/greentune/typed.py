"""Frozen dataclasses from plain mappings, type-checked: the one config system.

Run configs (``greentune.config``), schedule job files and compress options are all built by
``build``: every value is checked against its field's type, defaults are filled, and unknown
keys, missing keys and wrong types raise ConfigError naming the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from typing import Any, Literal

from greentune.errors import ConfigError

__all__ = ["build", "parse_fraction", "to_dict"]


def parse_fraction(text: str | float, key: str) -> float:
    """'2%', '0.02' or 0.02 -> 0.02; ``key`` names the setting in the error."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    raw = str(text).strip()
    try:
        return float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ConfigError(
            f"{key} must look like 1% or 0.01 (a percentage or a fraction), got {text!r}"
        ) from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, YAML-safe dict with every field written out (tuples become lists)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        elif isinstance(value, dict):
            out[f.name] = {k: list(v) if isinstance(v, tuple) else v for k, v in value.items()}
        else:
            out[f.name] = value
    return out


T = typing.TypeVar("T")


def build(cls: type[T], data: Any, prefix: str = "") -> T:
    """An instance of the frozen dataclass ``cls`` from a plain mapping (parsed YAML or CLI
    values): every value checked against its field's type, unknown keys and wrong types raised
    as ConfigError naming the key (``prefix`` + field) and the valid choices. The one config
    system: run configs, job files and compress options are all built here."""
    return typing.cast(T, _build(cls, data, prefix))


def _build(cls: type, data: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in valid:
            raise ConfigError(f"unknown key {prefix}{key}; valid keys: {', '.join(valid)}")
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in kwargs:
            raise ConfigError(f"{prefix}{f.name} is missing")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


_WORDS = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}


def _describe(tp: Any) -> str:
    """A type as a user writes its values in YAML."""
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is Literal:
        return " / ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return "a list"
    if tp is dt.datetime:
        return "a date and time"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return _WORDS.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, key + ".")  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        said = ", ".join(_describe(arg) for arg in args)
        raise ConfigError(f"{key} must be one of: {said}; got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{key}={value!r} is not valid; valid choices: {', '.join(map(str, args))}"
            )
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return {
            _coerce(args[0], k, f"{key}"): _coerce(args[1], v, f"{key}.{k}")
            for k, v in value.items()
        }
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        raise ConfigError(f"{key} must be a date and time, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, dt.date):  # YAML reads 2014-11-06 as a date
            return value.isoformat()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover - schema bug
