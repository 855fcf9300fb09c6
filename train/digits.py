"""scikit-learn's bundled 8x8 handwritten digits: offline, 1797 images, 10 classes."""
from __future__ import annotations

import numpy as np

from edgebench.train.base import Dataset


def load_digits_dataset(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]  # N x 1 x 8 x 8, in [0, 1]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return Dataset(
        name="digits",
        x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
        labels=tuple(str(i) for i in range(10)),
        preprocessing="pixel / 16 -> float32 in [0, 1], layout N x 1 x 8 x 8",
    )
