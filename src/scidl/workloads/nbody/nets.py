"""Neural interaction kicks for the Wisdom–Holman map (torch).

Both networks see the same inputs — the displacement vectors of body pairs (and of each
Jacobi coordinate), as features (unit vector, log distance) — and the same masses, and
sum over pairs, so they apply to any number of bodies and any masses:

* :class:`HamiltonianKick` learns a scalar pair function ``phi`` and forms the interaction
  Hamiltonian with the structure of the exact one (where ``phi = 1/r``):

      H_NN(q) = sum_{i>=1} C_i phi(q_i) - sum_{a<b} m_a m_b phi(x_b - x_a),   x = B q,

  with the Kepler constants ``C_i`` of the integrator's split (``m_i eta_{i-1}`` for
  ``whfast``, ``m_0 m_i`` for ``wh91``; :mod:`scidl.workloads.nbody.wh`);

  the kick is ``-(1/m'_i) dH_NN/dq_i`` by autograd: a gradient of a function of positions,
  so the map stays symplectic (Cai, Portegies Zwart & Podareanu 2021).
* :class:`DirectKick` (the control) learns a vector pair function ``f`` (exact:
  ``d/|d|^3``) and assembles the accelerations directly; ``f`` is not constrained to be a
  gradient, so the map is not symplectic.
"""

from __future__ import annotations

import torch
from torch import nn


def jacobi_matrix_t(m: torch.Tensor) -> torch.Tensor:
    """``A`` (B, N, N) with ``q = A x`` for masses ``m`` (B, N)."""
    b, n = m.shape
    eta = torch.cumsum(m, dim=1)
    rows = [m / eta[:, -1:]]
    for i in range(1, n):
        row = torch.zeros_like(m)
        row[:, :i] = -m[:, :i] / eta[:, i - 1 : i]
        row[:, i] = 1.0
        rows.append(row)
    return torch.stack(rows, dim=1)


def jacobi_mass_t(m: torch.Tensor) -> torch.Tensor:
    """Jacobi masses ``m'`` (B, N) (``m'_0`` = total mass)."""
    eta = torch.cumsum(m, dim=1)
    return torch.cat([eta[:, -1:], m[:, 1:] * eta[:, :-1] / eta[:, 1:]], dim=1)


def kepler_coef_t(m: torch.Tensor, scheme: str = "whfast") -> torch.Tensor:
    """Kepler constants ``C_i`` (B, N-1) of H_Kepler: ``m_i eta_{i-1}`` (WHFast) or
    ``m_0 m_i`` (WH91)."""
    if scheme == "whfast":
        return m[:, 1:] * torch.cumsum(m, dim=1)[:, :-1]
    if scheme == "wh91":
        return m[:, :1] * m[:, 1:]
    raise ValueError(f"unknown Wisdom-Holman scheme {scheme!r}; choose one of ('whfast', 'wh91')")


def pair_features(d: torch.Tensor) -> torch.Tensor:
    """(unit vector, log |d|) for displacement vectors ``d`` (..., 3) -> (..., 4)."""
    r = d.norm(dim=-1, keepdim=True)
    return torch.cat([d / r, torch.log(r)], dim=-1)


def _mlp(n_in: int, n_out: int, hidden: int, depth: int) -> nn.Sequential:
    """Tanh MLP; no output bias: it would cancel in both kicks (a constant added to an even
    potential has no gradient; a constant force cancels in the odd pair force), and DDP
    requires every parameter to receive a gradient."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(n_in, hidden), nn.Tanh()]
        n_in = hidden
    layers.append(nn.Linear(n_in, n_out, bias=False))
    return nn.Sequential(*layers)


def _pairs(x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All ordered pairs a != b: ``d = x_b - x_a`` (B, P, 3), ``m_a m_b`` (B, P), index a (P,)."""
    n = x.shape[1]
    ia, ib = zip(*[(a, b) for a in range(n) for b in range(n) if a != b], strict=True)
    a_idx = torch.tensor(ia, device=x.device)
    b_idx = torch.tensor(ib, device=x.device)
    return x[:, b_idx] - x[:, a_idx], m[:, a_idx] * m[:, b_idx], a_idx


class HamiltonianKick(nn.Module):
    """Kick = -(1/m') grad_q H_NN(q); ``forward(q, m) -> a'`` (B, N, 3), ``a'_0 = 0``."""

    def __init__(self, hidden: int = 64, depth: int = 2, scheme: str = "whfast") -> None:
        super().__init__()
        self.phi = _mlp(4, 1, hidden, depth)
        self.scheme = scheme

    def pair_potential(self, d: torch.Tensor) -> torch.Tensor:
        """Even in ``d`` (the pair energy does not depend on the order of the bodies)."""
        return 0.5 * (self.phi(pair_features(d)) + self.phi(pair_features(-d))).squeeze(-1)

    def hamiltonian(self, q: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """H_NN per system (B,)."""
        x = torch.linalg.solve(jacobi_matrix_t(m), q)
        d, mm, _ = _pairs(x, m)
        kepler = (kepler_coef_t(m, self.scheme) * self.pair_potential(q[:, 1:])).sum(1)
        return kepler - 0.5 * (mm * self.pair_potential(d)).sum(1)  # ordered pairs: half

    def forward(self, q: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        create = torch.is_grad_enabled()
        with torch.enable_grad():
            qg = q if q.requires_grad else q.detach().requires_grad_(True)
            h = self.hamiltonian(qg, m).sum()
            (grad,) = torch.autograd.grad(h, qg, create_graph=create)
        acc = -grad / jacobi_mass_t(m).unsqueeze(-1)
        return torch.cat([torch.zeros_like(acc[:, :1]), acc[:, 1:]], dim=1)


class DirectKick(nn.Module):
    """Accelerations assembled from a learned vector pair force (no gradient structure)."""

    def __init__(self, hidden: int = 64, depth: int = 2, scheme: str = "whfast") -> None:
        super().__init__()
        self.f = _mlp(4, 3, hidden, depth)
        self.scheme = scheme

    def pair_force(self, d: torch.Tensor) -> torch.Tensor:
        """Odd in ``d`` (Newton's third law), otherwise unconstrained."""
        return 0.5 * (self.f(pair_features(d)) - self.f(pair_features(-d)))

    def forward(self, q: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        a_mat = jacobi_matrix_t(m)
        x = torch.linalg.solve(a_mat, q)
        d, mm, a_idx = _pairs(x, m)
        contrib = mm.unsqueeze(-1) * self.pair_force(d)  # force on body a from b
        forces = torch.zeros_like(x).index_add_(1, a_idx, contrib)
        # dH/dq = -C_i f(q_i) - B^T F  with B = A^-1
        bt_f = torch.linalg.solve(a_mat.transpose(1, 2), forces)
        grad = -bt_f
        grad = torch.cat(
            [
                grad[:, :1],
                grad[:, 1:]
                - kepler_coef_t(m, self.scheme).unsqueeze(-1) * self.pair_force(q[:, 1:]),
            ],
            dim=1,
        )
        acc = -grad / jacobi_mass_t(m).unsqueeze(-1)
        return torch.cat([torch.zeros_like(acc[:, :1]), acc[:, 1:]], dim=1)


class ExactKick(nn.Module):
    """The exact interaction kick in the same torch form (for tests and references)."""

    def __init__(self, scheme: str = "whfast") -> None:
        super().__init__()
        self.scheme = scheme

    def forward(self, q: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        net = DirectKick.__new__(DirectKick)
        nn.Module.__init__(net)
        net.scheme = self.scheme
        net.pair_force = lambda d: d / d.norm(dim=-1, keepdim=True) ** 3  # type: ignore[method-assign]
        return DirectKick.forward(net, q, m)
