"""``greentune ensemble`` for classifiers: one classifier made of the networks of several
finished classification runs (the same recipe under several seeds, a deep ensemble, or several
PEFT methods). Nothing is retrained.

- The members must have been tested on the same texts with the same classes: each run's
  ``predictions.parquet`` is compared with the first member's.
- Each member's saved model scores the test texts again (a run keeps labels, not class
  probabilities). ``mean`` averages the members' class probabilities (soft voting); ``median``
  takes each class's median across the members (with two classes and an odd number of members
  that is the majority vote), then the most probable class. ``selected`` averages them with
  weights from ensemble selection on validation (``evaluate.ensemble.select_weights``: greedy
  picks with replacement that lower the validation log loss), so weak or redundant members
  get little or no weight; it needs members that held out the same validation texts, and its
  own validation score is cross-fitted (each half of the texts with weights chosen on the
  other half).
- Validation: members that split their data alike (the same ``text.*`` settings and seed) held
  out the same texts, and every row is scored on them; the recommendation is then chosen there.
  Members split with other seeds held out different texts, some of which the others trained
  on: no row gets a validation score and the recommendation is chosen on test, which
  ``metrics.json`` says (``energy.chosen_on``).
- Energy: the members' bills plus this command's own windows (``tasks/members.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from greentune.config import RunConfig
from greentune.data.text import TextSplits, load_text_splits
from greentune.energy.session import metered
from greentune.ensemble_file import Combination, save_ensemble
from greentune.errors import ConfigError, DataError
from greentune.evaluate.ensemble import select_weights
from greentune.evaluate.metrics import classification_metrics
from greentune.results import ModelResult, RunMetrics
from greentune.rundir import RunDir
from greentune.tasks.classify.predict import quality_for, softmax
from greentune.tasks.classify.predictor import ClassifyPredictor
from greentune.tasks.members import (
    Log,
    Member,
    bill_ensembles,
    check_members,
    ensemble_run,
    open_member,
    require_model_dir,
)

KINDS: tuple[str, ...] = ("mean", "median", "selected")
ENSEMBLE_KINDS: tuple[str, ...] = ("mean", "median")
"""The rows ``greentune ensemble`` makes unless told (``selected`` needs a shared validation
split, which runs of several seeds do not have)."""


@dataclasses.dataclass
class Tested:
    texts: list[str]
    labels: list[str]
    """The true class of each text, by name."""


def ensemble_runs(
    specs: list[str],
    out: str | Path,
    kinds: tuple[str, ...] = ENSEMBLE_KINDS,
    target: str | None = None,
    log: Log = print,
) -> RunDir:
    """Combine the networks of the runs ``specs`` into the run directory ``out``; see the
    module doc."""
    members = [open_member(s, "classify") for s in specs]
    for m in members:
        if m.row != m.metrics.model:
            raise ConfigError(
                f"{m.run.path}: row {m.row!r} is a baseline, which keeps no model to score "
                f"texts with; give the run ({m.run.path}) for its network"
            )
        require_model_dir(m.run.path, "ensemble")  # an ensemble of runs names its members
    check_members(members, kinds, KINDS, quality_for)
    if "selected" in kinds and not _shared_split(members):
        raise ConfigError(
            "--kinds selected chooses weights on the validation texts the members held out, "
            "and these members held out different ones (other text.* settings or seeds). Give "
            "runs of one seed and the same text.* settings, or use --kinds mean,median"
        )
    test = _same_test(members)
    return ensemble_run(
        members, out, kinds, target, lambda run, cfg: _ensemble(run, cfg, members, test, log)
    )


def combine(kind: str, probs: list[np.ndarray], weights: np.ndarray | None = None) -> np.ndarray:
    """(N, classes) combined class scores of the members' probabilities; ``weights`` (one per
    member, from ``select``) for ``selected``."""
    if kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r}; valid choices: {', '.join(KINDS)}")
    stack = np.stack(probs)
    if kind == "selected":
        if weights is None:
            raise ValueError("a selected ensemble needs weights chosen on validation")
        return np.einsum("mnc,m->nc", stack, weights)
    return stack.mean(axis=0) if kind == "mean" else np.median(stack, axis=0)


def log_loss(y: np.ndarray) -> Callable[[np.ndarray], float]:
    """The mean negative log-probability of the true classes ``y``, for class probabilities."""
    rows = np.arange(len(y))
    return lambda p: float(-np.mean(np.log(np.clip(p[rows, y], 1e-12, None))))


def select(val_probs: list[np.ndarray], y: np.ndarray) -> np.ndarray:
    """(M,) member weights: ensemble selection on the validation log loss."""
    return select_weights(val_probs, log_loss(y))


def cross_fitted(val_probs: list[np.ndarray], y: np.ndarray) -> np.ndarray:
    """The selected ensemble's validation probabilities, each half of the texts (alternate
    ones) combined with weights selected on the other half, so its validation score is not
    the in-sample score of its own choice."""
    out = np.zeros_like(val_probs[0])
    halves = np.arange(len(y)) % 2
    for half in (0, 1):
        fit, score = halves != half, halves == half
        weights = select([p[fit] for p in val_probs], y[fit])
        out[score] = combine("selected", [p[score] for p in val_probs], weights)
    return out


def _same_test(members: list[Member]) -> Tested:
    """The first member's test texts and labels; every other member must have the same."""
    first = members[0]
    labels0 = first.metrics.labels
    test = _test_texts(first)
    for m in members[1:]:
        if m.metrics.labels != labels0:
            raise ConfigError(
                f"{m.run.path} has the classes {m.metrics.labels}, {first.run.path} has "
                f"{labels0}; members must classify into the same classes"
            )
        own = _test_texts(m)
        if own != test:
            n0, n = len(test.texts), len(own.texts)
            at = next(
                (i for i in range(min(n, n0)) if (own.texts[i], own.labels[i]) != _row(test, i)),
                min(n, n0),
            )
            raise ConfigError(
                f"{m.run.path} was tested on other texts than {first.run.path} ({n} texts "
                f"against {n0}, the first difference at text {at + 1}); give runs tested on the "
                "same texts (the same text.test_path, or the same text.* settings and seed)"
            )
    return test


def _row(test: Tested, i: int) -> tuple[str, str]:
    return test.texts[i], test.labels[i]


def _test_texts(m: Member) -> Tested:
    frame = m.run.predictions
    frame = frame[frame.model == m.row]
    return Tested(frame.text.astype(str).tolist(), frame.y_true.astype(str).tolist())


def _shared_split(members: list[Member]) -> bool:
    """The members held out the same validation texts: same text.* settings, same seed."""
    cfg0 = members[0].run.config
    return all(m.run.config.text == cfg0.text and m.run.config.seed == cfg0.seed for m in members)


def _ensemble(
    run: RunDir, cfg: RunConfig, members: list[Member], test: Tested, log: Log
) -> RunMetrics:
    labels = members[0].metrics.labels or []
    index = {name: i for i, name in enumerate(labels)}
    y = np.array([index[v] for v in test.labels], dtype=np.int64)
    names = [m.name for m in members]
    shared = _shared_split(members)
    with metered(run.path, cfg.energy, "ensemble", log) as meter:
        with meter.window("data"):
            splits = load_text_splits(cfg.text, cfg.seed) if shared else None
        if splits is not None:
            _check_unchanged(splits, labels, test)
        with meter.window("ensemble"):
            probs: dict[str, np.ndarray] = {}
            val_probs: dict[str, np.ndarray] = {}
            for m, name in zip(members, names, strict=True):  # one model in memory at a time
                predictor = ClassifyPredictor.load(m.run)
                probs[name] = _probs(predictor, test.texts)
                if splits is not None:
                    val_probs[name] = _probs(predictor, splits.texts["val"])
                del predictor
            kinds = [f"ensemble-{k}" for k in cfg.eval.ensembles]
            weights = None
            if "ensemble-selected" in kinds:
                assert splits is not None  # refused before: the members share no validation
                if len(splits.labels["val"]) < 2:
                    raise ConfigError(
                        f"--kinds selected chooses weights on the validation texts, and "
                        f"{splits.origin} holds out {len(splits.labels['val'])}: raise text.val "
                        "or use --kinds mean,median"
                    )
                weights = select(list(val_probs.values()), splits.labels["val"])
            rows = {
                n: combine(n.removeprefix("ensemble-"), list(probs.values()), weights)
                for n in kinds
            }
            val_rows: dict[str, np.ndarray] = {}
            if splits is not None:
                members_val = list(val_probs.values())
                for n in kinds:
                    val_rows[n] = (
                        cross_fitted(members_val, splits.labels["val"])
                        if n == "ensemble-selected"
                        else combine(n.removeprefix("ensemble-"), members_val)
                    )
    metrics = RunMetrics(
        task="classify",
        model=next(iter(rows)),
        test={},
        labels=labels,
        data={
            "source": str(cfg.text.test_path or cfg.text.path),
            "members": [str(m.run.path) for m in members],
        },
    )
    for m, name in zip(members, names, strict=True):
        own = m.metrics.test[m.row]
        metrics.test[name] = ModelResult.from_dict(
            classification_metrics(y, probs[name].argmax(-1), len(labels))
        )
        metrics.test[name].fit_s, metrics.test[name].predict_s = own.fit_s, own.predict_s
        metrics.test[name].predictions, metrics.test[name].bill = own.predictions, own.bill
    for name, scores in rows.items():
        metrics.test[name] = ModelResult.from_dict(
            classification_metrics(y, scores.argmax(-1), len(labels))
        )
        metrics.test[name].predictions = len(y)
    if splits is not None:
        y_val, n_classes = splits.labels["val"], len(labels)
        every = {**val_probs, **val_rows}
        metrics.validation = {n: _scores(y_val, p.argmax(-1), n_classes) for n, p in every.items()}
    else:
        log(
            "ensemble: the members split their data with other text.* settings or seeds, so "
            "they held out different texts; no row has a validation score and the "
            "recommendation is chosen on test"
        )
    metrics.ensembles = {n: {"kind": n.removeprefix("ensemble-"), "members": names} for n in rows}
    save_ensemble(
        run,
        [(m.name, m.run, m.row, m.metrics.test[m.row].scores) for m in members],
        {n: Combination(n.removeprefix("ensemble-"), _weights_of(n, weights)) for n in rows},
    )
    if weights is not None:
        chosen = {n: float(w) for n, w in zip(names, weights, strict=True)}
        metrics.ensembles["ensemble-selected"]["weights"] = chosen
        log(
            "ensemble-selected: weights chosen on validation: "
            + ", ".join(f"{n} {w:.2f}" for n, w in chosen.items() if w > 0)
        )
    if meter.enabled:
        bill_ensembles(run, cfg, members, metrics, quality_for(cfg))
    run.write_predictions(_frame(test.texts, test.labels, {**probs, **rows}, labels))
    if splits is not None:
        y_names = [labels[i] for i in splits.labels["val"]]
        run.write_validation_predictions(
            _frame(splits.texts["val"], y_names, {**val_probs, **val_rows}, labels)
        )
    log(
        f"ensemble of {len(members)} members ({', '.join(names)}): "
        + ", ".join(f"{n} accuracy {metrics.test[n].score('accuracy'):.4f}" for n in rows)
    )
    return metrics


def _weights_of(name: str, weights: np.ndarray | None) -> np.ndarray | None:
    return weights if name == "ensemble-selected" else None


def merge_probabilities(combination: Combination, frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The members' ``ClassifyPredictor`` frames of one input combined as ``greentune ensemble``
    combined their class probabilities: the label is the class with the highest combined score,
    ``probability`` and ``p_<class>`` are the combined scores (the median's need not sum to 1)."""
    first = frames[0]
    columns = [c for c in first.columns if c.startswith("p_")]
    if not len(first):
        return first
    scores = combine(
        combination.kind, [f[columns].to_numpy(dtype=float) for f in frames], combination.weights
    )
    best = scores.argmax(-1)
    out = first.copy()
    out["label"] = [columns[i].removeprefix("p_") for i in best]
    out["probability"] = scores[np.arange(len(best)), best]
    out[columns] = scores
    return out


def _check_unchanged(splits: TextSplits, labels: list[str], test: Tested) -> None:
    """The data file read again still gives the runs' classes and test texts."""
    y_test = [splits.label_names[i] for i in splits.labels["test"]]
    if splits.label_names != labels or splits.texts["test"] != test.texts or y_test != test.labels:
        raise DataError(
            f"{splits.origin} no longer gives the classes or test texts the runs were scored on "
            "(their predictions.parquet): the data changed since the runs; run them again"
        )


def _probs(predictor: ClassifyPredictor, texts: list[str]) -> np.ndarray:
    return softmax(predictor.logits(predictor.batches(texts)).astype(np.float64))


def _scores(y: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in classification_metrics(y, pred, n_classes).items()
        if isinstance(v, float)
    }


def _frame(
    texts: list[str], y_true: list[str], scores: dict[str, np.ndarray], labels: list[str]
) -> pd.DataFrame:
    """predictions.parquet's layout of a classification run, one block per row."""
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "model": name,
                    "text": texts,
                    "y_true": y_true,
                    "y_pred": [labels[i] for i in s.argmax(-1)],
                }
            )
            for name, s in scores.items()
        ],
        ignore_index=True,
    )
