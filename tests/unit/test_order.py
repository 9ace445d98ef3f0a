import numpy as np
import pytest
import torch

from greentune.config import TrainConfig
from greentune.train.loop import train
from greentune.train.order import MEGABATCH, epoch_order


def test_without_lengths_the_order_is_the_seeded_permutation_runs_always_had():
    # checkpoints written before grouping existed resume on the same batches
    expected = np.random.default_rng([7, 2]).permutation(103)
    assert np.array_equal(epoch_order(103, seed=7, epoch=2, batch_size=8), expected)


def test_grouped_batches_hold_one_length_each_and_the_short_batch_comes_last():
    rng = np.random.default_rng(0)
    n, size = 1003, 8
    lengths = rng.integers(1, 4, size=n)  # three lengths: a sorted chunk splits cleanly
    order = epoch_order(n, seed=1, epoch=0, batch_size=size, lengths=lengths)
    assert sorted(order.tolist()) == list(range(n))  # every sample once
    batches = [order[i : i + size] for i in range(0, n, size)]
    assert len(batches[-1]) == n % size
    mixed = [b for b in batches[:-1] if len(set(lengths[b].tolist())) > 1]
    # a batch mixes lengths only where a sorted chunk of 50 batches passes from one to the next
    assert len(mixed) <= 2 * (n // (MEGABATCH * size) + 1)
    padded = sum(len(b) * lengths[b].max() for b in batches)
    plain = epoch_order(n, seed=1, epoch=0, batch_size=size)
    padded_plain = sum(
        len(plain[i : i + size]) * lengths[plain[i : i + size]].max() for i in range(0, n, size)
    )
    assert padded < 0.8 * padded_plain


def test_grouping_is_a_pure_function_of_seed_and_epoch():
    lengths = np.arange(500) % 37
    first = epoch_order(500, seed=3, epoch=1, batch_size=4, lengths=lengths)
    assert np.array_equal(first, epoch_order(500, seed=3, epoch=1, batch_size=4, lengths=lengths))
    assert not np.array_equal(
        first, epoch_order(500, seed=3, epoch=2, batch_size=4, lengths=lengths)
    )
    # the batches are shuffled, not left in length order: long and short ones alternate
    maxima = [lengths[first[i : i + 4]].max() for i in range(0, 500, 4)]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)


def test_lengths_must_match_the_samples():
    with pytest.raises(ValueError, match="3 lengths for 4 samples"):
        epoch_order(4, seed=0, epoch=0, batch_size=2, lengths=np.ones(3))


class Texts:
    """Samples 0..n-1 whose 'length' is i % 3; records the batches the loop asks for."""

    def __init__(self, n: int) -> None:
        self.n, self.asked = n, []
        self.lengths = np.arange(n) % 3

    def __len__(self) -> int:
        return self.n

    def get(self, idx):
        self.asked.append(idx.copy())
        x = torch.tensor(idx, dtype=torch.float32)[:, None]
        return {"x": x, "y": x[:, 0] % 3}


class Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)

    def forward(self, batch):
        return self.lin(batch["x"] / 100).squeeze(-1)

    def loss(self, out, batch):
        return ((out - batch["y"]) ** 2).mean()


@pytest.mark.parametrize("grouped", [True, False])
def test_the_loop_batches_by_length_only_when_asked(grouped):
    data = Texts(60)
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.01, patience=None, group_by_length=grouped)
    train(Linear(), data, cfg, seed=5)
    expected = [epoch_order(60, 5, epoch, 4, data.lengths if grouped else None) for epoch in (0, 1)]
    asked = np.concatenate(data.asked)
    assert np.array_equal(asked, np.concatenate(expected))
    one_length = all(len(set(data.lengths[b].tolist())) == 1 for b in data.asked)
    assert one_length == grouped
