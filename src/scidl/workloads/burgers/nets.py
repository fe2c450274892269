"""The Burgers PINN network: a tanh MLP (x, t) -> u with optional hard constraints."""

from __future__ import annotations

import math

import torch
from torch import nn


class Readout(nn.Module):
    """Linear map from ``n`` features to one value per row, the weight kept as a vector.

    ``nn.Linear(n, 1)`` stores a ``(1, n)`` weight; the PINN loss differentiates the
    network twice, and autograd then returns that weight's gradient with strides
    ``(1, 1)`` instead of the parameter's ``(n, 1)``, which DDP reports from every rank
    ("Grad strides do not match bucket view strides") and copies on every step. A 1-D
    weight has one layout, so its gradient always matches it.
    """

    def __init__(self, linear: nn.Linear) -> None:
        """Takes over the weights of ``linear`` (``out_features == 1``)."""
        super().__init__()
        if linear.out_features != 1 or linear.bias is None:
            raise ValueError("Readout takes an nn.Linear(n, 1) with a bias")
        self.weight = nn.Parameter(linear.weight.detach().reshape(-1).clone())
        self.bias = nn.Parameter(linear.bias.detach().clone())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.weight + self.bias


class BurgersNet(nn.Module):
    """Tanh MLP ``(x, t) -> u`` with inputs mapped to [-1, 1]; optional hard constraints."""

    def __init__(self, hidden: int = 32, depth: int = 4, hard_constraints: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width_in = 2
        for _ in range(depth):
            layers += [nn.Linear(width_in, hidden), nn.Tanh()]
            width_in = hidden
        self.net = nn.Sequential(*layers)
        head = nn.Linear(width_in, 1)
        self.hard_constraints = hard_constraints
        for m in [*self.net, head]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)
        self.out = Readout(head)

    def forward(self, xt: torch.Tensor) -> torch.Tensor:
        x, t = xt[:, 0], xt[:, 1]
        out = self.out(self.net(torch.stack([x, 2.0 * t - 1.0], dim=1)))
        if self.hard_constraints:
            out = -torch.sin(math.pi * x) + t * (1.0 - x * x) * out
        return out
