"""Text splits: fractions of one file, or a separate test file (e.g. SST-2's dev set)."""

from __future__ import annotations

import pandas as pd
import pytest

from greentune.config import TextDataConfig
from greentune.data.text import load_text_splits
from greentune.errors import DataError


def test_a_separate_test_file_is_the_test_split(tmp_path):
    train = pd.DataFrame({"text": [f"t{i}" for i in range(20)], "label": ["a", "b"] * 10})
    test = pd.DataFrame({"text": ["x", "y", "z"], "label": ["b", "c", "a"]})
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "dev.csv", index=False)
    cfg = TextDataConfig(path=str(tmp_path / "train.csv"), test_path=str(tmp_path / "dev.csv"))
    splits = load_text_splits(cfg, seed=0)
    assert splits.texts["test"] == ["x", "y", "z"]
    assert splits.label_names == ["a", "b", "c"]  # a class only the test file has
    assert splits.labels["test"].tolist() == [1, 2, 0]
    assert len(splits.texts["val"]) == 2 and len(splits.texts["train"]) == 18
    assert "(test: " in splits.origin


def test_a_bad_test_file_is_named(tmp_path):
    pd.DataFrame({"text": ["a", "b", "c"], "label": [0, 1, 0]}).to_csv(tmp_path / "t.csv")
    pd.DataFrame({"sentence": ["x"], "label": [0]}).to_csv(tmp_path / "d.csv", index=False)
    cfg = TextDataConfig(path=str(tmp_path / "t.csv"), test_path=str(tmp_path / "d.csv"))
    with pytest.raises(DataError, match=r"d.csv: column 'text' \(text.text_col\) not found"):
        load_text_splits(cfg, seed=0)
