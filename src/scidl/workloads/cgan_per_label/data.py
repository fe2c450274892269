"""scikit-learn's digits as GAN training images: 64 pixels in [-1, 1], a seeded split."""

from __future__ import annotations

from collections.abc import Sequence

import torch

N_LABELS = 10


IMG = 64  # 8 x 8 pixels


def load_images(
    seed: int, test_fraction: float = 0.3, labels: Sequence[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits scaled to [−1, 1] (64 pixels), split by a seeded permutation."""
    from sklearn.datasets import load_digits

    ds = load_digits()
    X = torch.tensor(ds.data / 8.0 - 1.0, dtype=torch.float32)
    y = torch.tensor(ds.target, dtype=torch.long)
    keep = torch.isin(y, torch.tensor(list(labels if labels is not None else range(N_LABELS))))
    X, y = X[keep], y[keep]
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(X), generator=g)
    n_test = int(round(test_fraction * len(X)))
    te, tr = perm[:n_test], perm[n_test:]
    return X[tr], y[tr], X[te], y[te]
