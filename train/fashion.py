"""Fashion-MNIST from its IDX files (Debian `dataset-fashion-mnist`, MIT): 60k train / 10k test, 28x28.

The training images are split into train and validation (seeded); search and predictors use the
validation split only, never the test split. Pixels are scaled to [0, 1] and standardised with the
training set's mean and standard deviation (0.2860, 0.3530).
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from edgebench.train.base import Dataset
from edgebench.types import EdgebenchError

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
LABELS = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
          "ankle boot")
MEAN, STD = 0.2860, 0.3530
FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not): magic 0x0000 + dtype 0x08 (uint8) + ndim, big-endian dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise EdgebenchError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise EdgebenchError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise EdgebenchError(f"{path}: header says {dims} but holds {data.size} values")
    return data.reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).exists():
            return root / name
    raise EdgebenchError(f"Fashion-MNIST file {stem}(.gz) not found in {root} "
                         f"(install Debian's dataset-fashion-mnist or pass the folder as root)")


def _prep(images: np.ndarray) -> np.ndarray:
    return ((images.astype(np.float32) / 255.0 - MEAN) / STD)[:, None, :, :]


def load_fashion_splits(root: str = "", val_size: int = 5000, seed: int = 0, train_limit: int = 0,
                        test_limit: int = 0) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """(Dataset with train minus validation and the test split, x_val, y_val). Limits (0: all) make quick
    configs; the validation split is drawn first, so it is the same whatever train_limit is."""
    folder = Path(root).expanduser() if root else DEFAULT_ROOT
    x_all = read_idx(_find(folder, FILES["train_x"]))
    y_all = read_idx(_find(folder, FILES["train_y"])).astype(np.int64)
    x_te = read_idx(_find(folder, FILES["test_x"]))
    y_te = read_idx(_find(folder, FILES["test_y"])).astype(np.int64)
    if not 0 < val_size < len(x_all):
        raise EdgebenchError(f"fashion_mnist: val_size must be between 1 and {len(x_all) - 1}, got {val_size}")
    perm = np.random.default_rng(seed).permutation(len(x_all))
    val_idx, tr_idx = perm[:val_size], perm[val_size:]
    if train_limit:
        tr_idx = tr_idx[:train_limit]
    if test_limit:
        x_te, y_te = x_te[:test_limit], y_te[:test_limit]
    ds = Dataset(
        name="fashion_mnist",
        x_train=_prep(x_all[tr_idx]), y_train=y_all[tr_idx],
        x_test=_prep(x_te), y_test=y_te,
        labels=LABELS,
        preprocessing=f"pixel / 255, standardised (x - {MEAN}) / {STD}, float32, layout N x 1 x 28 x 28",
    )
    return ds, _prep(x_all[val_idx]), y_all[val_idx]


def load_fashion_mnist(root: str = "", val_size: int = 5000, seed: int = 0, train_limit: int = 0,
                       test_limit: int = 0) -> Dataset:
    """The registry's loader: train (validation split held out) and test."""
    return load_fashion_splits(root, val_size, seed, train_limit, test_limit)[0]
