"""Generators and discriminators: one conditional pair, or one unconditional pair per label.

Both use the non-saturating GAN loss; ``GANPair.forward`` returns ``(L_D, L_G)`` such that one
backward of their sum gives D the gradient of L_D and G that of L_G only (see the workload)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from scidl.workloads.cgan_per_label.data import IMG


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
