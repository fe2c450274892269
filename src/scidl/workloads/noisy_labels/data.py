"""Digits with derived binary, multiclass and multilabel targets, and exact-rate label noise."""

from __future__ import annotations

from typing import Literal

import numpy as np

TaskKind = Literal["binary", "multiclass", "multilabel"]


_PRIME = np.array([0, 0, 1, 1, 0, 1, 0, 1, 0, 0], dtype=bool)


_LOOP = np.array([1, 0, 0, 0, 0, 0, 1, 0, 1, 1], dtype=bool)


def digit_targets(digits: np.ndarray, kind: TaskKind) -> np.ndarray:
    """Labels of a task derived from digit classes: (n,) ints or (n, 4) 0/1 for multilabel."""
    d = np.asarray(digits, dtype=np.int64)
    if kind == "binary":
        return (d % 2 == 0).astype(np.int64)
    if kind == "multiclass":
        return d.copy()
    if kind == "multilabel":
        return np.stack([d % 2 == 0, d >= 5, _PRIME[d], _LOOP[d]], 1).astype(np.int64)
    raise ValueError(f"unknown task kind {kind!r}; choices: binary, multiclass, multilabel")


def n_outputs(kind: TaskKind) -> int:
    """Network outputs: 2 logits (binary), 10 (multiclass), 4 independent logits (multilabel)."""
    return {"binary": 2, "multiclass": 10, "multilabel": 4}[kind]


def inject_noise(
    y: np.ndarray, rate: float, kind: TaskKind, rng: np.random.Generator, n_classes: int = 10
) -> np.ndarray:
    """Corrupt exactly ``round(rate · count)`` labels (entries for multilabel); returns a copy."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must lie in [0, 1], got {rate}")
    y = np.array(y, dtype=np.int64, copy=True)
    flat = y.reshape(-1) if kind == "multilabel" else y
    m = int(round(rate * flat.size))
    idx = rng.choice(flat.size, size=m, replace=False)
    if kind in ("binary", "multilabel"):
        flat[idx] = 1 - flat[idx]
    else:  # a different class, uniformly among the other n_classes - 1
        flat[idx] = (flat[idx] + rng.integers(1, n_classes, size=m)) % n_classes
    return y


def load_split(
    kind: TaskKind, seed: int, test_fraction: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardised digits features and clean labels, split by a seeded permutation."""
    from sklearn.datasets import load_digits

    ds = load_digits()
    X = ds.data.astype(np.float32)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(X))
    n_test = int(round(test_fraction * len(X)))
    te, tr = perm[:n_test], perm[n_test:]
    mu, sd = X[tr].mean(0), X[tr].std(0) + 1.0  # +1: several pixels are constant
    X = (X - mu) / sd
    y = digit_targets(ds.target, kind)
    return X[tr], y[tr], X[te], y[te]
