"""The VAE of the Ising workload (2-D latent, Bernoulli decoder)."""

from __future__ import annotations

import torch
from torch import nn


class IsingVAE(nn.Module):
    """MLP VAE: x (L²) → hidden → hidden → (μ, log σ²) → z → hidden → hidden → logits (L²)."""

    def __init__(self, n_in: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU()
        )
        self.mu = nn.Linear(hidden // 2, latent)
        self.logvar = nn.Linear(hidden // 2, latent)
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, hidden), nn.ReLU(),
            nn.Linear(hidden, n_in),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.mu(h), self.logvar(h).clamp(-12.0, 8.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # reparameterisation
        return self.decoder(z), mu, logvar
