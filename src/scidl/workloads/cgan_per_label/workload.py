"""Per-label GANs vs one conditional GAN on scikit-learn digits (8 × 8 images).

Lupo Pasini et al. (arXiv 2102.10485) partition the data by label and train one
generator/discriminator pair per label, concurrently on separate ranks. The package holds
the data (``data``), the models and their joint loss (``nets``), the sample-quality metrics
(``metrics``), this workload, and the rank-aware runner (``dist``).

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

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from scidl.runtime.dist import unwrap_model
from scidl.workloads.base import BuildContext, Task, Workload, WorkloadConfig
from scidl.workloads.cgan_per_label.data import N_LABELS, load_images
from scidl.workloads.cgan_per_label.metrics import (
    Classifier,
    sample,
    sample_metrics,
    train_classifier,
)
from scidl.workloads.cgan_per_label.nets import GANPair, PerLabelGAN


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


def gan_loss(model: nn.Module, batch: Any, z_dim: int) -> torch.Tensor:
    """``L_D + L_G`` (batch means) of a batch ``(x, y)``; z is drawn from the global RNG."""
    x, y = batch
    z = torch.randn(len(x), z_dim, device=x.device)
    ld, lg = model(x, y, z)
    return ld + lg


# ----------------------------------------------------------------------------- sampling


# ----------------------------------------------------------------------------- metrics


def make_evaluate(cfg: CGANConfig, seed: int, data: tuple[torch.Tensor, ...]) -> Callable[..., Any]:
    """evaluate(model, real_test) with a classifier trained once, lazily, on the train split."""
    Xtr, ytr = data
    cache: dict[str, Classifier] = {}

    def evaluate(model: nn.Module, real: torch.Tensor) -> dict[str, float]:
        if "clf" not in cache:
            cache["clf"] = train_classifier(Xtr, ytr, seed, cfg.classifier_steps)
        imgs = sample(unwrap_model(model), cfg.labels, cfg.eval_per_label, cfg.z_dim, seed + 1)
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
