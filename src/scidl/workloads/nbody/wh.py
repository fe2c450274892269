"""Wisdom–Holman symplectic maps in Jacobi coordinates (numpy float64, batched over systems).

Units G = 1; body 0 is the central star. With ``eta_i = m_0 + .. + m_i``, the Jacobi
coordinates are ``q_0`` = centre of mass and ``q_i = x_i - (centre of mass of bodies
0..i-1)``; Jacobi masses ``m'_i = m_i eta_{i-1} / eta_i``. The Hamiltonian splits as

    H = H_Kepler + H_int,
    H_Kepler = sum_{i>=1} |p'_i|^2 / (2 m'_i) - C_i / |q_i|,     (Kepler mu_i = C_i / m'_i)
    H_int    = sum_{i>=1} C_i / |q_i|  -  sum_{a<b} m_a m_b / |x_a - x_b|,

with two choices of the Kepler constants ``C_i`` (a ``scheme``):

* ``"whfast"`` (default): ``C_i = m_i eta_{i-1}``, ``mu_i = eta_i`` — the split of WHFast
  (Rein & Tamayo 2015, MNRAS 452, 376; as in REBOUND's ``whfast`` integrator in Jacobi
  coordinates), with the drift–kick–drift step: Kepler drift(h/2) · kick(h) · Kepler
  drift(h/2), the half drifts of neighbouring steps merged (one Kepler solve and one kick
  per step).
* ``"wh91"``: ``C_i = m_0 m_i``, ``mu_i = m_0 eta_i / eta_{i-1}`` — the split of Wisdom &
  Holman (1991, AJ 102, 1528), with the kick–drift–kick step (half kicks merged). At the
  same step its energy error is larger (``test_whfast_dkd_energy_error_below_wh91_kdk``);
  it is kept to compare against and to reproduce results made with it.

In both, the star–first-planet terms of H_int cancel exactly (``q_1 = x_1 - x_0`` and
``C_1 = m_0 m_1``) and are left out. No symplectic corrector is applied (Wisdom, Holman &
Touma 1996): REBOUND's ``ri_whfast.corrector = 0``. The drift is exact
(:mod:`scidl.workloads.nbody.kepler`); the kick changes Jacobi velocities by
``-h / m'_i * dH_int/dq_i``. Any kick that is the gradient of a function of positions keeps
the map symplectic — the property the neural Hamiltonian kick keeps and a network that
predicts accelerations directly loses. Arrays: positions/velocities (B, N, 3), masses
(B, N); one call advances the whole batch of B systems.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from scidl.workloads.nbody import small
from scidl.workloads.nbody.kepler import KeplerParams, kepler_drift_pv, kepler_params

Scheme = Literal["whfast", "wh91"]
SCHEMES: tuple[str, ...] = ("whfast", "wh91")

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


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown Wisdom-Holman scheme {scheme!r}; choose one of {SCHEMES}")
    return scheme


def jacobi_masses(m: np.ndarray, scheme: str = "whfast") -> tuple[np.ndarray, np.ndarray]:
    """Jacobi masses ``m'`` (B, N) (``m'_0`` = total mass) and the Kepler ``mu`` (B, N-1)
    of ``scheme``: ``eta_i`` (WHFast) or ``m_0 eta_i / eta_{i-1}`` (WH91)."""
    check_scheme(scheme)
    eta = np.cumsum(m, axis=1)
    mp = m.copy()
    mp[:, 0] = eta[:, -1]
    mp[:, 1:] = m[:, 1:] * eta[:, :-1] / eta[:, 1:]
    mu = eta[:, 1:].copy() if scheme == "whfast" else m[:, :1] * eta[:, 1:] / eta[:, :-1]
    return mp, mu


def to_jacobi(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    return np.einsum("bij,bjk->bik", jacobi_matrix(m), x)


def from_jacobi(q: np.ndarray, m: np.ndarray) -> np.ndarray:
    return np.einsum("bij,bjk->bik", np.linalg.inv(jacobi_matrix(m)), q)


def interaction_terms(
    m: np.ndarray, binv: np.ndarray, mp: np.ndarray, kepler_c: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """H_int as a sum of inverse distances of linear combinations of the planets' Jacobi
    coordinates: ``H_int = sum_k c_k / |d_k|`` with ``d_k = G_k q_{1:}``.

    Terms: every pair ``a < b`` except (0, 1) (``G_k`` = rows b - a of ``A^-1``,
    ``c_k = -m_a m_b``) and every Kepler compensation ``i >= 2`` (``G_k = e_i``,
    ``c_k = C_i``). Returns ``G`` (B, K, N-1), ``c`` (B, K) and the kick matrix
    ``Kmat`` (B, N-1, K) with ``a'_{1:} = Kmat @ (d / |d|^3 * c)``: from
    ``-(1/m'_j) dH_int/dq_j = sum_k c_k G_kj d_k / (m'_j |d_k|^3)``."""
    b, n = m.shape
    rows: list[np.ndarray] = []
    coef: list[np.ndarray] = []
    for i in range(n):
        for j in range(i + 1, n):
            if (i, j) != (0, 1):
                rows.append(binv[:, j, 1:] - binv[:, i, 1:])
                coef.append(-m[:, i] * m[:, j])
    for i in range(2, n):
        e = np.zeros((b, n - 1))
        e[:, i - 1] = 1.0
        rows.append(e)
        coef.append(kepler_c[:, i - 1])
    g = np.stack(rows, axis=1) if rows else np.zeros((b, 0, n - 1))
    c = np.stack(coef, axis=1) if coef else np.zeros((b, 0))
    kmat = g.transpose(0, 2, 1) / mp[:, 1:, None]
    return g, c, kmat


@dataclass
class Masses:
    """Masses (B, N) with their Jacobi quantities for ``scheme``, computed once per
    integration."""

    m: np.ndarray
    scheme: str = "whfast"

    def __post_init__(self) -> None:
        check_scheme(self.scheme)
        self.m = np.asarray(self.m, dtype=np.float64)
        self.a = jacobi_matrix(self.m)
        self.binv = np.linalg.inv(self.a)
        self.mp, self.mu = jacobi_masses(self.m, self.scheme)
        self.kepler_c = self.mp[:, 1:] * self.mu  # C_i of H_Kepler (i >= 1)
        self.kepler = kepler_params(self.mu)
        self.g, self.c, self.kmat = interaction_terms(self.m, self.binv, self.mp, self.kepler_c)


def _planet_kick(qp: np.ndarray, ms: Masses) -> np.ndarray:
    """Jacobi accelerations (B, N-1, 3) of the planets from H_int: element-wise numpy calls
    over the batch, a loop over the N-1 planets (stacked tiny matmuls are slow)."""
    n = qp.shape[1]
    d = ms.g[:, :, 0, None] * qp[:, None, 0]  # d_k = sum_j G_kj q_j   (B, K, 3)
    for j in range(1, n):
        d += ms.g[:, :, j, None] * qp[:, None, j]
    r2 = np.einsum("bki,bki->bk", d, d)
    wd = (ms.c / (r2 * np.sqrt(r2)))[..., None] * d
    acc = np.empty(qp.shape)
    for j in range(n):
        acc[:, j] = np.einsum("bk,bki->bi", ms.kmat[:, j], wd)
    return acc


def interaction_kick(q: np.ndarray, ms: Masses) -> np.ndarray:
    """Exact Jacobi accelerations from H_int: ``a'_i = -(1/m'_i) dH_int/dq_i`` (B, N, 3);
    ``a'_0 = 0`` (the centre of mass moves uniformly)."""
    acc = np.zeros(q.shape)
    acc[:, 1:] = _planet_kick(q[:, 1:], ms)
    return acc


def interaction_energy(q: np.ndarray, ms: Masses) -> np.ndarray:
    """H_int per system (B,) (for tests: the kick is its gradient)."""
    d = ms.g @ q[:, 1:]
    return (ms.c / np.sqrt((d * d).sum(-1))).sum(1)


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
    def from_inertial(
        cls, x: np.ndarray, v: np.ndarray, m: np.ndarray, scheme: str = "whfast"
    ) -> WHState:
        ms = Masses(m, scheme)
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


def _drift_w(w: np.ndarray, kp: KeplerParams, h: float) -> None:
    """Kepler flow (in place) of stacked Jacobi states ``w`` (B, N, 2, 3) for time ``h``:
    exact for the planets, uniform motion for the centre of mass."""
    w[:, 1:] = kepler_drift_pv(w[:, 1:], kp, h)
    w[:, 0, 0] += h * w[:, 0, 1]


def _state(w: np.ndarray, ms: Masses) -> WHState:
    return WHState(w[:, :, 0].copy(), w[:, :, 1].copy(), ms)


def _kick_w(w: np.ndarray, ms: Masses, kick: KickFn, h: float) -> None:
    """Kick (in place) of stacked Jacobi states ``w`` (B, N, 2, 3) by ``h``."""
    if kick is interaction_kick:
        w[:, 1:, 1] += h * _planet_kick(w[:, 1:, 0], ms)
    else:
        w[:, :, 1] += h * kick(w[:, :, 0], ms)


def _advance(w: np.ndarray, ms: Masses, kick: KickFn, h: float, n: int, kick_first: bool) -> None:
    """``n`` merged steps (kick(h) then drift(h), or drift then kick) in place; a small
    batch with the exact kick runs in Python floats (:mod:`scidl.workloads.nbody.small`)."""
    if n <= 0:
        return
    if kick is interaction_kick and w.shape[0] * (w.shape[1] - 1) <= small.MAX_ORBITS:
        small.advance(w, ms, h, n, kick_first)
        return
    for _ in range(n):
        if kick_first:
            _kick_w(w, ms, kick, h)
        _drift_w(w, ms.kepler, h)
        if not kick_first:
            _kick_w(w, ms, kick, h)


def integrate(
    s: WHState,
    h: float,
    n_steps: int,
    kick: KickFn = interaction_kick,
    record_every: int = 0,
    on_record: Callable[[int, WHState], None] | None = None,
) -> WHState:
    """Advance ``n_steps`` Wisdom–Holman steps of size ``h`` of every system of the batch,
    in the scheme of ``s.ms``, and return the synchronised state.

    ``whfast`` (drift–kick–drift) runs on ``M_k = drift(h/2) S_k``, for which a step is
    ``M_{k+1} = drift(h) kick(h) M_k``; ``wh91`` (kick–drift–kick) on ``M_k = kick(h/2)
    S_k``, ``M_{k+1} = kick(h) drift(h) M_k``: one Kepler solve and one kick evaluation per
    step; the synchronised state ``S_k`` is recovered by the inverse half step. ``kick`` must
    belong to the same split (``interaction_kick`` does; a kick network is trained for one).

    ``on_record(step, state)`` is called at step 0 and every ``record_every`` steps with a
    synchronised copy of the state."""
    ms = s.ms
    dkd = ms.scheme == "whfast"
    w = np.stack([s.q, s.u], axis=2)  # (B, N, 2, 3): one array, one matmul per drift

    def half(x: np.ndarray, sign: float) -> None:
        if dkd:
            _drift_w(x, ms.kepler, sign * 0.5 * h)
        else:
            _kick_w(x, ms, kick, sign * 0.5 * h)

    if on_record is not None:
        on_record(0, _state(w, ms))
    marks = list(range(record_every, n_steps, record_every)) if on_record and record_every > 0 else []
    half(w, 1.0)
    done = 0
    for mark in marks:
        _advance(w, ms, kick, h, mark - done, dkd)
        done = mark
        synced = w.copy()
        half(synced, -1.0)
        on_record(mark, _state(synced, ms))  # type: ignore[misc]
    _advance(w, ms, kick, h, n_steps - done, dkd)
    half(w, -1.0)
    out = _state(w, ms)
    if on_record is not None and record_every > 0 and n_steps > 0 and n_steps % record_every == 0:
        on_record(n_steps, _state(w, ms))
    return out
