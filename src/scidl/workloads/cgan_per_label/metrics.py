"""Sample quality: an inception-style score and a Fréchet distance from a locally trained
classifier, label accuracy and within-label diversity (formulas in the workload's docstring)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy import linalg
from torch import nn
from torch.nn import functional as F

from scidl.workloads.cgan_per_label.data import IMG, N_LABELS
from scidl.workloads.cgan_per_label.nets import GANPair, PerLabelGAN


@torch.no_grad()
def sample(
    model: nn.Module | Mapping[int, nn.Module], labels: Sequence[int], n: int, z_dim: int, seed: int
) -> torch.Tensor:
    """``(len(labels), n, 64)`` images from a conditional pair, a PerLabelGAN or a
    ``{label: Generator}`` dict."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for lab in labels:
        z = torch.randn(n, z_dim, generator=g)
        if isinstance(model, Mapping):
            out.append(model[lab](z))
        elif isinstance(model, PerLabelGAN):
            pair = model.pairs[model.labels.index(lab)]
            assert isinstance(pair, GANPair)
            out.append(pair.G(z))
        else:
            assert isinstance(model, GANPair)
            out.append(model.G(z, model.onehot(torch.full((n,), lab, dtype=torch.long))))
    return torch.stack(out)


class Classifier(nn.Module):
    """MLP classifier; ``features`` (penultimate layer) feed the Fréchet distance."""

    def __init__(self, hidden: int = 128, feat: int = 64, n_classes: int = N_LABELS):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(IMG, hidden), nn.ReLU(), nn.Linear(hidden, feat), nn.ReLU()
        )
        self.head = nn.Linear(feat, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def train_classifier(X: torch.Tensor, y: torch.Tensor, seed: int, steps: int = 600) -> Classifier:
    """Adam on the real training images (batch 64) with its own RNG; returns it in eval mode
    (gradients are enabled inside, so it also works from an ``evaluate`` under no_grad)."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        clf = Classifier()
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3, weight_decay=1e-4)
    with torch.enable_grad():  # evaluate() runs under no_grad in the trainer
        for _ in range(steps):
            b = torch.randint(0, len(X), (64,), generator=g)
            opt.zero_grad()
            F.cross_entropy(clf(X[b]), y[b]).backward()
            opt.step()
    return clf.eval()


def inception_score(probs: np.ndarray) -> float:
    """exp(mean_x KL(p(y|x) ‖ p(y))) with p(y) the mean of p(y|x) over the samples."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    py = p.mean(0, keepdims=True)
    return float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(py)), 1))))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b`` (rows)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # near-singular covariances of poor generators
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sa @ sb)
        if not np.isfinite(covmean).all():  # the usual FID fallback: offset the diagonals
            off = 1e-6 * np.eye(len(sa))
            covmean = linalg.sqrtm((sa + off) @ (sb + off))
    covmean = np.real(covmean)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(sa + sb - 2.0 * covmean))


@torch.no_grad()
def sample_metrics(
    images: torch.Tensor, labels: Sequence[int], clf: Classifier, real: torch.Tensor
) -> dict[str, float]:
    """IS, Fréchet distance to ``real``, label accuracy and within-label diversity (pixel
    std across the samples of a label, averaged) of ``images`` (L, n, 64)."""
    L, n, _ = images.shape
    flat = images.reshape(L * n, IMG)
    intended = torch.tensor(labels).repeat_interleave(n)
    logits = clf(flat)
    return {
        "inception_score": inception_score(torch.softmax(logits, 1).numpy()),
        "fid": frechet_distance(clf.features(real).numpy(), clf.features(flat).numpy()),
        "label_accuracy": float((logits.argmax(1) == intended).float().mean()),
        "pixel_std": float(images.std(dim=1).mean()),  # within-label diversity
    }
