"""Text baselines in the same run: the majority class and TF-IDF + logistic regression."""

from __future__ import annotations

import time

import numpy as np

from greentune.data.text import TextSplits
from greentune.evaluate.metrics import classification_metrics
from greentune.results import ModelResult, energy_windows
from greentune.train.callbacks import Window, no_window


def text_baselines(splits: TextSplits, window: Window = no_window) -> dict[str, ModelResult]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    n = len(splits.label_names)
    y_train, y_test = splits.labels["train"], splits.labels["test"]
    out: dict[str, ModelResult] = {}
    with window("baseline/majority_class"):
        majority = int(np.bincount(y_train, minlength=n).argmax())
        pred = np.full_like(y_test, majority)
    out["majority_class"] = _result(classification_metrics(y_test, pred, n), 0.0, None)
    t0 = time.perf_counter()
    with window("baseline/tfidf_logreg"):
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
        clf = LogisticRegression(max_iter=2000).fit(
            vec.fit_transform(splits.texts["train"]), y_train
        )
        t1 = time.perf_counter()
        pred = clf.predict(vec.transform(splits.texts["test"]))
    scores = classification_metrics(y_test, pred, n)
    out["tfidf_logreg"] = _result(scores, t1 - t0, time.perf_counter() - t1)
    for name, row in out.items():
        row.predictions = len(y_test)
        row.energy_windows = energy_windows(
            f"baseline/{name}", row.fit_s or 0.0, row.predict_s or 0.0
        )
    return out


def _result(scores: dict[str, object], fit_s: float, predict_s: float | None) -> ModelResult:
    result = ModelResult.from_dict(dict(scores))
    result.fit_s, result.predict_s = fit_s, predict_s
    return result
