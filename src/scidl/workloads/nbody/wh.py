"""Wisdom–Holman symplectic map in Jacobi coordinates (numpy float64, batched over systems).

Units G = 1; body 0 is the central star. With ``eta_i = m_0 + .. + m_i``, the Jacobi
coordinates are ``q_0`` = centre of mass and ``q_i = x_i - (centre of mass of bodies
0..i-1)``; Jacobi masses ``m'_i = m_i eta_{i-1} / eta_i``. The Hamiltonian splits as
(Wisdom & Holman 1991; Rein & Tamayo 2015, WHFast)

    H = H_Kepler + H_int,
    H_Kepler = sum_{i>=1} |p'_i|^2 / (2 m'_i) - m_0 m_i / |q_i|        (mu_i = m_0 eta_i / eta_{i-1})
    H_int    = sum_{i>=1} m_0 m_i / |q_i|  -  sum_{a<b} m_a m_b / |x_a - x_b|.

One step is kick(h/2) · Kepler drift(h) · kick(h/2): the drift is exact (universal
variables, :mod:`scidl.workloads.nbody.kepler`), the kick changes Jacobi velocities by
``-h / m'_i * dH_int/dq_i``. Any kick that is the gradient of a function of positions keeps
the map symplectic — the property the neural Hamiltonian kick keeps and a network that
predicts accelerations directly loses. Arrays: positions/velocities (B, N, 3), masses (B, N).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scidl.workloads.nbody.kepler import kepler_drift

KickFn = Callable[[np.ndarray, "Masses"], np.ndarray]  # (q (B,N,3), masses) -> a' (B,N,3)


def jacobi_matrix(m: np.ndarray) -> np.ndarray:
    """``A`` (B, N, N) with ``q = A x`` (Jacobi from inertial coordinates)."""
    b, n = m.shape
    eta = np.cumsum(m, axis=1)
    a = np.zeros((b, n, n))
    a[:, 0, :] = m / eta[:, -1:]
    for i in range(1, n):
        a[:, i, :i] = -m[:, :i] / eta[:, i - 1 : i]
        a[:, i, i] = 1.0
    return a


def jacobi_masses(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Jacobi masses ``m'`` (B, N) (``m'_0`` = total mass) and Kepler ``mu`` (B, N-1)."""
    eta = np.cumsum(m, axis=1)
    mp = m.copy()
    mp[:, 0] = eta[:, -1]
    mp[:, 1:] = m[:, 1:] * eta[:, :-1] / eta[:, 1:]
    mu = m[:, :1] * eta[:, 1:] / eta[:, :-1]
    return mp, mu


def to_jacobi(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    return np.einsum("bij,bjk->bik", jacobi_matrix(m), x)


def from_jacobi(q: np.ndarray, m: np.ndarray) -> np.ndarray:
    return np.einsum("bij,bjk->bik", np.linalg.inv(jacobi_matrix(m)), q)


def pair_forces(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Newtonian forces ``F_a = sum_b m_a m_b (x_b - x_a) / |x_b - x_a|^3`` (B, N, 3)."""
    d = x[:, None, :, :] - x[:, :, None, :]  # d[a, b] = x_b - x_a
    r2 = np.einsum("bijk,bijk->bij", d, d)
    np.einsum("bii->bi", r2)[...] = np.inf
    w = m[:, :, None] * m[:, None, :] / (r2 * np.sqrt(r2))
    return np.einsum("bij,bijk->bik", w, d)


@dataclass
class Masses:
    """Masses (B, N) with their Jacobi quantities, computed once per integration."""

    m: np.ndarray

    def __post_init__(self) -> None:
        self.m = np.asarray(self.m, dtype=np.float64)
        self.a = jacobi_matrix(self.m)
        self.binv = np.linalg.inv(self.a)
        self.mp, self.mu = jacobi_masses(self.m)


def interaction_kick(q: np.ndarray, ms: Masses) -> np.ndarray:
    """Exact Jacobi accelerations from H_int: ``a'_i = -(1/m'_i) dH_int/dq_i`` (B, N, 3)."""
    m, binv = ms.m, ms.binv
    x = np.einsum("bij,bjk->bik", binv, q)
    # dH_int/dq = -m0 m_i q_i/|q_i|^3 (Kepler compensation) - B^T F (pair potential)
    grad = -np.einsum("bji,bjk->bik", binv, pair_forces(x, m))
    qi = q[:, 1:]
    r3 = np.einsum("bik,bik->bi", qi, qi) ** 1.5
    grad[:, 1:] -= (m[:, :1] * m[:, 1:] / r3)[..., None] * qi
    acc = -grad / ms.mp[..., None]
    acc[:, 0] = 0.0  # the centre of mass moves uniformly
    return acc


def energy(x: np.ndarray, v: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Total energy ``sum m v^2 / 2 - sum_{a<b} m_a m_b / r_ab`` per system (B,)."""
    kin = 0.5 * np.einsum("bi,bik,bik->b", m, v, v)
    d = x[:, None] - x[:, :, None]
    r = np.sqrt(np.einsum("bijk,bijk->bij", d, d))
    iu = np.triu_indices(m.shape[1], 1)
    pot = -(m[:, :, None] * m[:, None, :] / np.where(r > 0, r, np.inf))[:, iu[0], iu[1]].sum(1)
    return kin + pot


def angular_momentum(x: np.ndarray, v: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Total angular momentum vector per system (B, 3)."""
    return np.einsum("bi,bik->bk", m, np.cross(x, v))


@dataclass
class WHState:
    """Jacobi positions/velocities (B, N, 3) and masses of a batch of systems."""

    q: np.ndarray
    u: np.ndarray
    ms: Masses

    @classmethod
    def from_inertial(cls, x: np.ndarray, v: np.ndarray, m: np.ndarray) -> WHState:
        ms = Masses(m)
        return cls(np.einsum("bij,bjk->bik", ms.a, x), np.einsum("bij,bjk->bik", ms.a, v), ms)

    def copy(self, u: np.ndarray | None = None) -> WHState:
        return WHState(self.q.copy(), (self.u if u is None else u).copy(), self.ms)

    def inertial(self) -> tuple[np.ndarray, np.ndarray]:
        b = self.ms.binv
        return np.einsum("bij,bjk->bik", b, self.q), np.einsum("bij,bjk->bik", b, self.u)

    def energy(self) -> np.ndarray:
        return energy(*self.inertial(), self.ms.m)

    def angular_momentum(self) -> np.ndarray:
        return angular_momentum(*self.inertial(), self.ms.m)


def drift(s: WHState, h: float) -> None:
    """Exact Kepler flow of every Jacobi body for time ``h`` (in place)."""
    r, v = kepler_drift(s.q[:, 1:], s.u[:, 1:], s.ms.mu, h)
    s.q[:, 1:] = r
    s.u[:, 1:] = v
    s.q[:, 0] += h * s.u[:, 0]


def integrate(
    s: WHState,
    h: float,
    n_steps: int,
    kick: KickFn = interaction_kick,
    record_every: int = 0,
    on_record: Callable[[int, WHState], None] | None = None,
) -> WHState:
    """Advance ``n_steps`` Wisdom–Holman steps of size ``h`` (kick-drift-kick, with the
    half kicks of neighbouring steps merged: one kick evaluation per step).

    ``on_record(step, state)`` is called at step 0 and every ``record_every`` steps with a
    synchronised copy of the state."""
    s = s.copy()
    if on_record is not None:
        on_record(0, s.copy())
    acc = kick(s.q, s.ms)
    s.u += 0.5 * h * acc
    for step in range(1, n_steps + 1):
        drift(s, h)
        acc = kick(s.q, s.ms)
        if on_record is not None and record_every and step % record_every == 0:
            on_record(step, s.copy(u=s.u + 0.5 * h * acc))
        s.u += (0.5 if step == n_steps else 1.0) * h * acc
    return s
