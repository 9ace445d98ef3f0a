"""Labelled text for classification: CSV, JSONL, or a ``datasets`` folder saved to disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from greentune.config import TextDataConfig
from greentune.errors import ConfigError, DataError


def pad_tokens(rows: list[np.ndarray], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad token-id rows to the longest row of this batch only (5x faster than fixed, STACK.md)."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for j, r in enumerate(rows):
        ids[j, : len(r)] = r
        mask[j, : len(r)] = 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}


@dataclass
class TextSplits:
    texts: dict[str, list[str]]
    labels: dict[str, np.ndarray]
    """Integer class ids per split."""
    label_names: list[str]
    origin: str


def read_text_table(cfg: TextDataConfig, file: str | None = None) -> tuple[pd.DataFrame, str]:
    """``file`` (default ``text.path``) as a frame, and its name for messages."""
    file = file or cfg.path
    if not file:
        raise ConfigError("task=classify needs text.path (CSV, JSONL or a datasets folder)")
    path = Path(file).expanduser()
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        if path.is_dir():
            from datasets import load_from_disk

            ds = load_from_disk(str(path))
            if hasattr(ds, "keys"):  # a DatasetDict: use its "train" part (or the first)
                ds = ds["train"] if "train" in ds else ds[next(iter(ds.keys()))]
            frame = ds.to_pandas()
        elif path.suffix.lower() in (".jsonl", ".json"):
            frame = pd.read_json(path, lines=path.suffix.lower() == ".jsonl")
        else:
            # a text such as 'null' or 'NA' is text, not a missing value (as SST-2's README asks)
            frame = pd.read_csv(path, keep_default_na=False)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    return frame, str(path)


def load_text_splits(cfg: TextDataConfig, seed: int) -> TextSplits:
    frame, origin = _checked_table(cfg, None)
    held = _checked_table(cfg, cfg.test_path) if cfg.test_path else None
    labels = frame[cfg.label_col].astype(str)
    names = sorted(set(labels) | (set(held[0][cfg.label_col].astype(str)) if held else set()))
    if len(names) < 2:
        raise DataError(f"{origin}: column {cfg.label_col!r} has one class ({names[0]}); need >= 2")
    index = {n: i for i, n in enumerate(names)}
    ids = labels.map(index).to_numpy()
    order = np.random.default_rng(seed).permutation(len(frame))
    n_test = 0 if held else _count(cfg.test, len(frame), "text.test")
    n_val = _count(cfg.val, len(frame), "text.val")
    if len(frame) - n_test - n_val < 2:
        raise DataError(f"{origin}: {len(frame)} rows are too few for the val/test fractions")
    parts = {
        "test": order[:n_test],
        "val": order[n_test : n_test + n_val],
        "train": order[n_test + n_val :],
    }
    text_list = frame[cfg.text_col].astype(str).tolist()
    texts = {k: [text_list[i] for i in v] for k, v in parts.items()}
    label_ids = {k: ids[v].astype(np.int64) for k, v in parts.items()}
    if held:
        texts["test"] = held[0][cfg.text_col].astype(str).tolist()
        label_ids["test"] = held[0][cfg.label_col].astype(str).map(index).to_numpy(np.int64)
        origin = f"{origin} (test: {held[1]})"
    return TextSplits(texts, label_ids, names, origin)


def _checked_table(cfg: TextDataConfig, file: str | None) -> tuple[pd.DataFrame, str]:
    """The table with its text and label columns present and never empty."""
    frame, origin = read_text_table(cfg, file)
    for key, col in (("text.text_col", cfg.text_col), ("text.label_col", cfg.label_col)):
        if col not in frame.columns:
            raise DataError(
                f"{origin}: column {col!r} ({key}) not found; columns are: "
                f"{', '.join(map(str, frame.columns))}"
            )
    for col in (cfg.text_col, cfg.label_col):
        series = frame[col]
        empty = series.isna() | (series.astype(str).str.strip() == "")
        if empty.any():
            row = int(np.argmax(empty.to_numpy())) + 1
            raise DataError(
                f"{origin}: column {col!r} is empty at row {row}; fill or drop that row"
            )
    return frame, origin


def _count(spec: str, n: int, key: str) -> int:
    try:
        frac = float(spec)
    except ValueError:
        raise ConfigError(f"{key}={spec!r} must be a fraction such as 0.1") from None
    if not 0.0 < frac < 1.0:
        raise ConfigError(f"{key}={spec} must lie in (0, 1)")
    return max(1, round(n * frac))


_INCIDENT_TEMPLATES = {
    "outage": [
        "power is out on {street} since {time}, whole block dark",
        "no electricity at {street}, neighbours also affected",
        "blackout reported near {street} after the storm",
        "lost power at {time}, the {place} is without supply",
    ],
    "vegetation": [
        "tree branch touching the line on {street}",
        "overgrown trees near the substation at {street}",
        "fallen tree resting on wires by the {place}",
        "vegetation growing into the power lines along {street}",
    ],
    "billing": [
        "my bill doubled this month, please check the meter reading",
        "charged twice for {month}, need a refund",
        "the invoice shows an estimated reading again for {month}",
        "question about the tariff change on my {month} bill",
    ],
    "voltage": [
        "lights flicker every evening at {street}",
        "appliances at the {place} keep tripping, voltage seems low",
        "voltage dips around {time} damaging equipment",
        "brownout at {street}, lights are dim",
    ],
}
_STREETS = ["Elm Street", "King Road", "Station Avenue", "Harbour Lane", "Mill Way", "Park Drive"]
_PLACES = ["school", "clinic", "bakery", "office park", "farm", "library"]
_TIMES = ["6 am", "noon", "7 pm", "midnight", "3 pm"]
_MONTHS = ["January", "March", "June", "October"]


def synthetic_incidents(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Small labelled grid-service messages (4 classes) for examples and tests."""
    rng = np.random.default_rng(seed)
    labels = sorted(_INCIDENT_TEMPLATES)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        template = _INCIDENT_TEMPLATES[label][rng.integers(len(_INCIDENT_TEMPLATES[label]))]
        text = template.format(
            street=_STREETS[rng.integers(len(_STREETS))],
            place=_PLACES[rng.integers(len(_PLACES))],
            time=_TIMES[rng.integers(len(_TIMES))],
            month=_MONTHS[rng.integers(len(_MONTHS))],
        )
        rows.append((text, label))
    return pd.DataFrame(rows, columns=["text", "label"])
