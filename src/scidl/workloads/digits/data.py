"""scikit-learn's digits as arrays: scaled to [0, 1], a fixed stratified split."""

from __future__ import annotations

import numpy as np


def load_digits_arrays(test_fraction: float, seed: int = 0) -> tuple[np.ndarray, ...]:
    """(X_train, y_train, X_test, y_test), images scaled to [0, 1], shape [n, 1, 8, 8]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    X = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_fraction, random_state=seed, stratify=y)
    return Xtr, ytr, Xte, yte
