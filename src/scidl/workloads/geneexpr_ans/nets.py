"""The sigmoid autoencoder whose code nodes are scored by saliency."""

from __future__ import annotations

import torch
from torch import nn


class SigmoidAE(nn.Module):
    """x → hidden → sigmoid latent → hidden → x̂ (linear output)."""

    def __init__(self, n_in: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, latent),
                                     nn.Sigmoid())
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, n_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
