"""``ClassifyPredictor``: a classification run's model and tokenizer, loaded once; texts in,
labels and class probabilities out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from greentune.config import RunConfig
from greentune.errors import DataError
from greentune.models.variants import read_variant
from greentune.rundir import RunDir
from greentune.tasks.base import Predictor, Prepared
from greentune.tasks.classify.artifacts import load_model
from greentune.tasks.classify.batches import TextBatches, tokenize
from greentune.tasks.classify.predict import predict_logits, softmax


class ClassifyPredictor(Predictor):
    """``predict(frame)`` labels the texts in the run's text column (``text.text_col``; a list
    of strings works too). The result keeps the input's index and has ``label``,
    ``probability`` (of that label) and one ``p_<class>`` column per class."""

    task = "classify"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        labels: list[str],
        cfg: RunConfig,
        run: RunDir | None = None,
        variant: str = "fp32",
    ) -> None:
        self.model, self.tokenizer, self.labels, self.cfg = model, tokenizer, labels, cfg
        self.run, self.variant = run, variant

    @classmethod
    def load(cls, run: RunDir) -> ClassifyPredictor:
        model, tokenizer, labels = load_model(run.path)
        variant = str(read_variant(run.model_dir).get("method", "fp32"))
        return cls(model, tokenizer, labels, run.config, run, variant)

    def with_model(self, model: Any) -> ClassifyPredictor:
        return ClassifyPredictor(
            model, self.tokenizer, self.labels, self.cfg, self.run, self.variant
        )

    def batches(self, texts: list[str], labels: np.ndarray | None = None) -> TextBatches:
        ids = np.zeros(len(texts), dtype=np.int64) if labels is None else labels
        return tokenize(self.tokenizer, texts, ids, self.cfg.text.max_length)

    def logits(self, batches: TextBatches) -> np.ndarray:
        return predict_logits(self.model, batches, self.cfg.eval.batch_size)

    def prepare(  # type: ignore[override]
        self, frame: pd.DataFrame | Sequence[str], source: str = "the DataFrame"
    ) -> Prepared:
        """Check and tokenize the texts (see the class docstring)."""
        texts, index = self._texts(frame, source)
        if not texts:  # the tokenizer refuses an empty list
            empty = TextBatches([], np.zeros(0, dtype=np.int64), 0)
            return Prepared(self, 0, (empty, index))
        return Prepared(self, len(texts), (self.batches(texts), index))

    def predict_prepared(self, items: list[Prepared]) -> list[pd.DataFrame]:
        parts: list[tuple[TextBatches, pd.Index]] = [item.payload for item in items]
        tokens = [t for batches, _ in parts for t in batches.tokens]
        if not tokens:
            return [self._frame(np.zeros((0, len(self.labels))), index) for _, index in parts]
        pad_id = next(batches.pad_id for batches, _ in parts if len(batches))
        joined = TextBatches(tokens, np.zeros(len(tokens), dtype=np.int64), pad_id)
        probs = softmax(self.logits(joined).astype(np.float64))
        frames, start = [], 0
        for batches, index in parts:
            frames.append(self._frame(probs[start : start + len(batches)], index))
            start += len(batches)
        return frames

    def _frame(self, probs: np.ndarray, index: pd.Index) -> pd.DataFrame:
        if not len(probs):
            return pd.DataFrame(columns=["label", "probability"], index=index)
        best = probs.argmax(-1)
        out = pd.DataFrame(
            {
                "label": [self.labels[i] for i in best],
                "probability": probs[np.arange(len(best)), best],
            },
            index=index,
        )
        for j, name in enumerate(self.labels):
            out[f"p_{name}"] = probs[:, j]
        return out

    def _texts(self, frame: Any, source: str) -> tuple[list[str], pd.Index]:
        if isinstance(frame, pd.DataFrame):
            col = self.cfg.text.text_col
            if col not in frame.columns:
                raise DataError(
                    f"{source}: text column {col!r} not found; columns are: "
                    f"{', '.join(map(str, frame.columns))} (the run reads text.text_col={col!r})"
                )
            values, index = frame[col].tolist(), frame.index
        elif isinstance(frame, Sequence) and not isinstance(frame, str):
            values, index = list(frame), pd.RangeIndex(len(frame))
        else:
            raise DataError(
                f"{source}: expected a DataFrame with a {self.cfg.text.text_col!r} column or a "
                f"list of strings, got {type(frame).__name__}"
            )
        for row, value in enumerate(values):
            if not isinstance(value, str):
                raise DataError(
                    f"{source}: row {row + 1} of the texts holds {value!r} "
                    f"({type(value).__name__}), not a string; fill or drop it"
                )
        return values, index
