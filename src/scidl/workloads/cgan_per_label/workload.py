"""Per-label GANs vs one conditional GAN on scikit-learn digits (8 × 8 images).

Lupo Pasini et al. (arXiv 2102.10485) partition the data by label and train one
generator/discriminator pair per label, concurrently on separate ranks; this module holds
the models, the losses, the sample-quality metrics and the workload; the rank-aware runner
lives in :mod:`scidl.workloads.cgan_per_label.dist`.

Both variants use the non-saturating GAN loss, updated simultaneously by one optimizer:

    L_D = softplus(−D(x)) + softplus(D(G(z)))       (G(z) detached)
    L_G = softplus(−D̄(G(z)))                        (D̄: D with detached parameters)

so ``(L_D + L_G).backward()`` gives D the gradient of L_D and G the gradient of L_G only —
one loss, one optimizer, and the trainer's DDP path works unchanged.

Sample quality uses a classifier trained locally on the same training split:
inception-style score IS = exp E_x KL(p(y|x) ‖ p(y)) (10 = perfect for 10 balanced classes),
Fréchet distance FD = ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2}) between the
classifier's penultimate features of real test images and generated ones, and the share of
samples the classifier assigns to the label they were generated for; the pixel standard
deviation across a label's samples measures diversity (mode collapse drives it to 0).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from scipy import linalg
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from scidl.workloads.base import BuildContext, Task, Workload, WorkloadConfig

N_LABELS = 10
IMG = 64  # 8 x 8 pixels


class CGANConfig(WorkloadConfig):
    """Settings of the ``cgan_per_label`` workload (and of the per-label runner's models)."""

    mode: Literal["conditional", "per_label"] = Field(
        "conditional", description="one conditional G/D pair, or one unconditional pair per label"
    )
    labels: list[int] = Field(
        default_factory=lambda: list(range(N_LABELS)), description="digit classes used"
    )
    z_dim: int = Field(16, ge=1, description="latent dimension")
    hidden: int = Field(128, ge=8, description="hidden width of G and D")
    test_fraction: float = Field(0.3, gt=0.0, lt=1.0, description="held-out real images")
    eval_per_label: int = Field(100, ge=10, description="generated samples per label in eval")
    classifier_steps: int = Field(600, ge=1, description="Adam steps of the metric classifier")


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


def _mlp(n_in: int, hidden: int, n_out: int, act: Callable[[], nn.Module]) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, hidden), act(), nn.Linear(hidden, hidden), act(), nn.Linear(hidden, n_out)
    )


class Generator(nn.Module):
    """z (and a one-hot label if conditional) → 64 pixels in [−1, 1]."""

    def __init__(self, z_dim: int, hidden: int, n_cond: int = 0):
        super().__init__()
        self.z_dim, self.n_cond = z_dim, n_cond
        self.net = _mlp(z_dim + n_cond, hidden, IMG, nn.ReLU)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        h = z if c is None else torch.cat([z, c], 1)
        return torch.tanh(self.net(h))


class Discriminator(nn.Module):
    """64 pixels (and a one-hot label if conditional) → one logit (real vs generated)."""

    def __init__(self, hidden: int, n_cond: int = 0):
        super().__init__()
        self.net = _mlp(IMG + n_cond, hidden, 1, lambda: nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        h = x if c is None else torch.cat([x, c], 1)
        return self.net(h).squeeze(1)


class GANPair(nn.Module):
    """A generator and its discriminator; ``forward`` returns the batch means ``(L_D, L_G)``.

    An empty batch gives zeros that still touch every parameter (DDP sees all gradients).
    A conditional pair (``n_cond > 0``) takes the labels as one-hot inputs of G and D.
    """

    def __init__(self, z_dim: int, hidden: int, n_cond: int = 0):
        super().__init__()
        self.G = Generator(z_dim, hidden, n_cond)
        self.D = Discriminator(hidden, n_cond)
        self.n_cond = n_cond

    def onehot(self, y: torch.Tensor) -> torch.Tensor | None:
        return F.one_hot(y, self.n_cond).float() if self.n_cond else None

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.onehot(y)
        fake = self.G(z, c)
        loss_d = F.softplus(-self.D(x, c)).sum() + F.softplus(self.D(fake.detach(), c)).sum()
        frozen = {n: p.detach() for n, p in self.D.named_parameters()}
        loss_g = F.softplus(-functional_call(self.D, frozen, (fake, c))).sum()
        n = max(len(x), 1)
        return loss_d / n, loss_g / n


class PerLabelGAN(nn.Module):
    """One unconditional :class:`GANPair` per label; each sees only its label's samples."""

    def __init__(self, labels: Sequence[int], z_dim: int, hidden: int):
        super().__init__()
        self.labels = list(labels)
        self.pairs = nn.ModuleList(GANPair(z_dim, hidden) for _ in self.labels)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ld = lg = x.new_zeros(())
        for lab, pair in zip(self.labels, self.pairs, strict=True):
            m = y == lab
            d, g = pair(x[m], y[m], z[m])
            ld, lg = ld + d, lg + g
        return ld, lg


def gan_loss(model: nn.Module, batch: Any, z_dim: int) -> torch.Tensor:
    """``L_D + L_G`` (batch means) of a batch ``(x, y)``; z is drawn from the global RNG."""
    x, y = batch
    z = torch.randn(len(x), z_dim, device=x.device)
    ld, lg = model(x, y, z)
    return ld + lg


def _unwrap(m: nn.Module) -> nn.Module:
    inner = getattr(m, "module", m)  # DistributedDataParallel holds the model as .module
    return inner if isinstance(inner, nn.Module) else m


# ----------------------------------------------------------------------------- sampling


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


# ----------------------------------------------------------------------------- metrics


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


def make_evaluate(cfg: CGANConfig, seed: int, data: tuple[torch.Tensor, ...]) -> Callable[..., Any]:
    """evaluate(model, real_test) with a classifier trained once, lazily, on the train split."""
    Xtr, ytr = data
    cache: dict[str, Classifier] = {}

    def evaluate(model: nn.Module, real: torch.Tensor) -> dict[str, float]:
        if "clf" not in cache:
            cache["clf"] = train_classifier(Xtr, ytr, seed, cfg.classifier_steps)
        imgs = sample(_unwrap(model), cfg.labels, cfg.eval_per_label, cfg.z_dim, seed + 1)
        return sample_metrics(imgs, cfg.labels, cache["clf"], real)

    return evaluate


def build_model(cfg: CGANConfig) -> nn.Module:
    if cfg.mode == "conditional":
        return GANPair(cfg.z_dim, cfg.hidden, n_cond=N_LABELS)
    return PerLabelGAN(cfg.labels, cfg.z_dim, cfg.hidden)


class CGANPerLabel(Workload):
    """GANs on digits: one conditional pair, or one pair per label (data-parallel here;
    see :mod:`scidl.workloads.cgan_per_label.dist` for one label per rank)."""

    name = "cgan_per_label"
    description = "per-label GANs vs a conditional GAN on digits; IS/Fréchet score from a local classifier"
    Config = CGANConfig
    smoke = ["task.hidden=16", "task.z_dim=4", "task.classifier_steps=20",
             "task.eval_per_label=10", "train.batch_size=16"]
    defaults = {
        "train": {"epochs": 60, "batch_size": 64, "log_every": 50},
        "optim": {"lr": 2e-4, "betas": [0.5, 0.999]},
    }

    def build(self, cfg: WorkloadConfig, ctx: BuildContext) -> Task:
        assert isinstance(cfg, CGANConfig)
        Xtr, ytr, Xte, _ = load_images(ctx.seed, cfg.test_fraction, cfg.labels)
        model = build_model(cfg)
        return Task(
            model=model,
            train_data=TensorDataset(Xtr, ytr),
            loss=lambda m, b: gan_loss(m, b, cfg.z_dim),
            evaluate=make_evaluate(cfg, ctx.seed, (Xtr, ytr)),
            val_data=Xte,
            headline="fid",
            higher_is_better=False,
        )


def save_grid(images: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """PNG of (L, n, 64) images: one row per label."""
    from matplotlib.figure import Figure

    L, n, _ = images.shape
    tiles = F.pad(images.reshape(L, n, 8, 8), (1, 1, 1, 1), value=-1.0)  # 1-pixel gaps
    grid = tiles.permute(0, 2, 1, 3).reshape(L * 10, n * 10).numpy()
    fig = Figure(figsize=(n * 0.6 + 0.3, L * 0.6 + 0.5))
    ax = fig.subplots()
    ax.imshow(grid, cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
