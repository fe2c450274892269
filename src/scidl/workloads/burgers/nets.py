"""The Burgers PINN network: a tanh MLP (x, t) -> u with optional hard constraints.

``BurgersNet(xt, derivatives=True)`` returns, besides u, the derivatives the residual
needs (u_x, u_t, u_xx), pushed forward through the layers with the weights (forward-mode,
as the forward Laplacian of Li et al. 2023, arXiv 2307.08214, for one input direction):

    linear   z = a W^T + b:   dz = da W^T,   d2z = d2a W^T
    tanh     a = tanh(z):     da = s1 dz,    d2a = s1 d2z + s2 (dz_x)^2
             with s1 = 1 - a^2 = tanh'(z),  s2 = -2 a s1 = tanh''(z).

The value and the three derivative streams go through each layer as one batched matmul;
the loss then needs one backward pass, where nested reverse-mode differentiation
(``autograd.grad(..., create_graph=True)`` twice) builds and back-propagates through a
graph several times larger.
"""

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
    """Tanh MLP ``(x, t) -> u`` with inputs mapped to [-1, 1]; optional hard constraints.

    ``forward(xt)`` returns u (N,); ``forward(xt, derivatives=True)`` returns (N, 4): the
    columns u, u_x, u_t, u_xx (see the module docstring), differentiable with respect to
    the weights.
    """

    #: ``forward`` takes ``derivatives=True`` (read by the residual)
    has_derivatives = True

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

    def forward(self, xt: torch.Tensor, derivatives: bool = False) -> torch.Tensor:
        if derivatives:
            return self._with_derivatives(xt)
        x, t = xt[:, 0], xt[:, 1]
        out = self.out(self.net(torch.stack([x, 2.0 * t - 1.0], dim=1)))
        if self.hard_constraints:
            out = -torch.sin(math.pi * x) + t * (1.0 - x * x) * out
        return out

    def _linears(self) -> list[nn.Linear]:
        return [m for m in self.net if isinstance(m, nn.Linear)]

    def _with_derivatives(self, xt: torch.Tensor) -> torch.Tensor:
        """(N, 4): u, u_x, u_t, u_xx by forward-mode propagation through the MLP."""
        x, t = xt[:, 0], xt[:, 1]
        lins = self._linears()
        first = lins[0]
        w = first.weight  # (h, 2): input 0 is x, input 1 is 2t - 1 (d/dt = 2 d/d(input 1))
        a = torch.tanh(first(torch.stack([x, 2.0 * t - 1.0], dim=1)))  # (N, h)
        # streams (x, t, xx) of the first pre-activation: the same for every point, d2z = 0
        dz = torch.stack([w[:, 0], 2.0 * w[:, 1], torch.zeros_like(w[:, 0])]).unsqueeze(1)
        d = _tanh_streams(a, dz, dz[0].square())
        for lin in lins[1:]:
            a_next = torch.tanh(torch.addmm(lin.bias, a, lin.weight.T))
            dz = d @ lin.weight.T  # (3, N, h): the three streams in one batched product
            d, a = _tanh_streams(a_next, dz, dz[0].square()), a_next
        nw, nb = self.out.weight, self.out.bias
        n = a @ nw + nb
        n_x, n_t, n_xx = d @ nw  # (N,) each
        if not self.hard_constraints:
            return torch.stack([n, n_x, n_t, n_xx], dim=1)
        # u = -sin(pi x) + g N with g = t (1 - x^2)
        g, g_x, g_t, g_xx = t * (1.0 - x * x), -2.0 * x * t, 1.0 - x * x, -2.0 * t
        s, c = torch.sin(math.pi * x), torch.cos(math.pi * x)
        u = -s + g * n
        u_x = -math.pi * c + g_x * n + g * n_x
        u_t = g_t * n + g * n_t
        u_xx = math.pi**2 * s + g_xx * n + 2.0 * g_x * n_x + g * n_xx
        return torch.stack([u, u_x, u_t, u_xx], dim=1)


def _tanh_streams(a: torch.Tensor, dz: torch.Tensor, dzx2: torch.Tensor) -> torch.Tensor:
    """The (x, t, xx) streams after ``a = tanh(z)`` from those of ``z`` (``dz``, (3, ., h)) and
    ``(dz_x)^2``: ``s1 dz`` for all three, plus ``s2 (dz_x)^2 = -2 a s1 (dz_x)^2`` for xx."""
    s1 = 1.0 - a.square()  # tanh'(z)
    d = s1 * dz
    d[2].addcmul_(s1 * a, dzx2, value=-2.0)  # in place: the product's inputs are kept, not it
    return d
