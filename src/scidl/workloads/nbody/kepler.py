"""Analytic Kepler drift in universal variables (vectorised numpy, float64).

For the two-body problem ``r'' = -mu r / |r|^3`` the state after a time ``dt`` is

    r = f r0 + g v0,      v = fdot r0 + gdot v0,
    f = 1 - chi^2 c2(z) / r0,    g = dt - chi^3 c3(z) / sqrt(mu),
    fdot = sqrt(mu) chi (z c3(z) - 1) / (r r0),    gdot = 1 - chi^2 c2(z) / r,

with ``z = alpha chi^2``, ``alpha = 2 / r0 - v0^2 / mu`` and the universal anomaly ``chi``
the root of the universal Kepler equation

    sqrt(mu) dt = (r0 . v0 / sqrt(mu)) chi^2 c2 + (1 - alpha r0) chi^3 c3 + r0 chi

(Danby 1988, ch. 6; Battin 1999, ch. 4), solved by Laguerre–Conway iterations (robust for
any eccentricity) polished by Newton steps. ``c2``, ``c3`` are the Stumpff functions,
evaluated by their series for |z| < 1 (no cancellation) and in closed form otherwise.
Works for elliptic and hyperbolic orbits and for steps longer than a period.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

_SERIES_TERMS = 11


def stumpff_c2_c3(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stumpff functions c2(z) = (1 - cos sqrt z)/z and c3(z) = (sqrt z - sin sqrt z)/z^1.5."""
    z = np.asarray(z, dtype=np.float64)
    zmax = float(np.abs(z).max(initial=0.0))
    if zmax < 1.0:  # fast path (short steps): series only
        return _series(z, zmax)
    c2 = np.empty_like(z)
    c3 = np.empty_like(z)
    small = np.abs(z) < 1.0
    if small.any():
        c2[small], c3[small] = _series(z[small], 1.0)
    pos = z >= 1.0
    if pos.any():
        s = np.sqrt(z[pos])
        c2[pos] = 2.0 * np.sin(0.5 * s) ** 2 / z[pos]
        c3[pos] = (s - np.sin(s)) / (z[pos] * s)
    neg = z <= -1.0
    if neg.any():
        s = np.sqrt(-z[neg])
        c2[neg] = 2.0 * np.sinh(0.5 * s) ** 2 / (-z[neg])
        c3[neg] = (np.sinh(s) - s) / (-z[neg] * s)
    return c2, c3


def _series(z: np.ndarray, zmax: float) -> tuple[np.ndarray, np.ndarray]:
    """c2 = sum (-z)^k / (2k+2)!, c3 = sum (-z)^k / (2k+3)! for |z| <= zmax < 1 (Horner),
    truncated where the next term is below 1e-18 (relative to c2 ~ 1/2)."""
    k = 1
    while k < _SERIES_TERMS and zmax**k / _fact(2 * k + 2) > 1e-18:
        k += 1
    c2s, c3s = _C2[_SERIES_TERMS - k :], _C3[_SERIES_TERMS - k :]
    s2 = np.full_like(z, c2s[0])
    s3 = np.full_like(z, c3s[0])
    mz = -z
    for a, b in zip(c2s[1:], c3s[1:], strict=True):
        s2 = s2 * mz + a
        s3 = s3 * mz + b
    return s2, s3


def _fact(n: int) -> float:
    out = 1.0
    for k in range(2, n + 1):
        out *= k
    return out


def kepler_drift(
    r0: np.ndarray,
    v0: np.ndarray,
    mu: np.ndarray | float,
    dt: float,
    tol: float = 1e-12,
    max_iter: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Advance Kepler orbits ``(r0, v0)`` (shape (..., 3)) with gravitational parameters
    ``mu`` (shape (...)) by ``dt``; returns ``(r, v)``. Exact up to rounding."""
    shape = r0.shape
    r0 = r0.reshape(-1, 3)
    v0 = v0.reshape(-1, 3)
    mu = np.broadcast_to(np.asarray(mu, dtype=np.float64), shape[:-1]).reshape(-1)
    rn0 = np.sqrt(np.einsum("ij,ij->i", r0, r0))
    vv0 = np.einsum("ij,ij->i", v0, v0)
    sqmu = np.sqrt(mu)
    alpha = 2.0 / rn0 - vv0 / mu
    eta0 = np.einsum("ij,ij->i", r0, v0) / sqmu  # r0 . v0 / sqrt(mu)
    zeta0 = 1.0 - alpha * rn0
    target = sqmu * dt
    # initial guess: mean motion for ellipses, a safe fraction of dt / r0 otherwise
    chi = np.where(alpha > 0, target * alpha, target / rn0)

    def parts(chi: np.ndarray) -> tuple[np.ndarray, ...]:
        z = alpha * chi * chi
        c2, c3 = stumpff_c2_c3(z)
        f = eta0 * chi * chi * c2 + zeta0 * chi**3 * c3 + rn0 * chi - target
        fp = eta0 * chi * (1.0 - z * c3) + zeta0 * chi * chi * c2 + rn0  # = r(chi) > 0
        fpp = eta0 * (1.0 - z * c2) + zeta0 * chi * (1.0 - z * c3)
        return f, fp, fpp, c2, c3

    n = 5.0
    for _ in range(max_iter):  # Laguerre–Conway: converges from anywhere
        f, fp, fpp, _, _ = parts(chi)
        disc = np.sqrt(np.abs((n - 1) ** 2 * fp * fp - n * (n - 1) * f * fpp))
        delta = n * f / (fp + np.sign(fp) * disc)
        chi = chi - delta
        if np.all(np.abs(delta) <= tol * np.maximum(np.abs(chi), 1e-300)):
            break
    # |delta| <= 1e-12 |chi| and (at least) quadratic convergence: one Newton step
    # brings chi to rounding level
    f, fp, _, c2, c3 = parts(chi)
    chi = chi - f / fp
    z = alpha * chi * chi
    c2, c3 = stumpff_c2_c3(z)
    ff = 1.0 - chi * chi * c2 / rn0
    g = dt - chi**3 * c3 / sqmu
    r = ff[:, None] * r0 + g[:, None] * v0
    rn = np.sqrt(np.einsum("ij,ij->i", r, r))
    fdot = sqmu * chi * (z * c3 - 1.0) / (rn * rn0)
    gdot = 1.0 - chi * chi * c2 / rn
    v = fdot[:, None] * r0 + gdot[:, None] * v0
    return r.reshape(shape), v.reshape(shape)


# Series coefficients, highest order first (Horner).
_C2 = [1.0 / _fact(2 * k + 2) for k in range(_SERIES_TERMS, -1, -1)]
_C3 = [1.0 / _fact(2 * k + 3) for k in range(_SERIES_TERMS, -1, -1)]



class KeplerParams(NamedTuple):
    """Gravitational parameters ``mu`` (...) with the derived arrays the fast drift
    uses every step (computed once per integration)."""

    mu: np.ndarray
    sqrt_mu: np.ndarray
    inv_mu: np.ndarray
    inv_sqrt_mu: np.ndarray


def kepler_params(mu: np.ndarray) -> KeplerParams:
    mu = np.asarray(mu, dtype=np.float64)
    return KeplerParams(mu, np.sqrt(mu), 1.0 / mu, 1.0 / np.sqrt(mu))


def _min(a: np.ndarray) -> float:
    """Smallest entry (a Python reduction is cheaper than numpy's for a few entries)."""
    return min(a.ravel().tolist()) if a.size <= 32 else float(a.min())


def _max(a: np.ndarray) -> float:
    return max(a.ravel().tolist()) if a.size <= 32 else float(a.max())


def kepler_drift_pv(w: np.ndarray, kp: KeplerParams, dt: float) -> np.ndarray:
    """Kepler drift of stacked states ``w`` (..., 2, 3) (position row, velocity row) with
    the gravitational parameters in ``kp`` (shape (...)) by ``dt``; returns new states.

    Fast path for the short steps of a Wisdom–Holman map: for elliptic orbits, Kepler's
    equation in the change of eccentric anomaly ``x`` (Danby 1988, sec. 6.8),

        n dt = x - (1 - r0/a) sin x + (r0 . v0 / sqrt(mu a)) (1 - cos x),

    solved by two Newton steps from its second-order series solution, then the f and g
    functions ``f = 1 - a/r0 (1 - cos x)``, ``g = dt - (x - sin x)/n``,
    ``fdot = -sqrt(mu a) sin x / (r r0)``, ``gdot = 1 - a/r (1 - cos x)``. Element-wise
    numpy calls only (stacked 2×2 or 3×3 matmuls cost far more per element), a few dozen
    per drift whatever the batch, so their cost is shared by all systems of a batch.
    A hyperbolic or parabolic orbit, or a Newton iteration whose last correction exceeds
    1e-8 of ``x`` (below that, quadratic convergence leaves ``x`` at rounding level), sends
    the whole call to :func:`kepler_drift` (universal variables, Laguerre–Conway), which
    handles every case."""
    r, v = w[..., 0, :], w[..., 1, :]
    rv = np.einsum("...i,...i->...", r, v)
    r0 = np.sqrt(np.einsum("...i,...i->...", r, r))
    alpha = 2.0 / r0 - np.einsum("...i,...i->...", v, v) * kp.inv_mu  # 1 / semi-major axis
    if not _min(alpha) > 0.0:
        return _drift_general(w, kp.mu, dt)
    sqa = np.sqrt(alpha)
    n = kp.sqrt_mu * alpha * sqa  # mean motion
    mean = n * dt
    ecos = 1.0 - r0 * alpha  # e cos E0
    esin = rv * sqa * kp.inv_sqrt_mu  # e sin E0
    # F(x) = x - ecos sin x - esin cos x + esin - mean,  F'(x) = 1 - ecos cos x + esin sin x = r/a
    shift = esin - mean
    x = mean / (1.0 - ecos)
    x = x - 0.5 * esin * x * x / (1.0 - ecos)
    for _ in range(2):
        c, s = np.cos(x), np.sin(x)
        dx = (x - ecos * s - esin * c + shift) / (1.0 - ecos * c + esin * s)
        x = x - dx
    if not _max(np.abs(dx / x)) <= 1e-8:
        return _drift_general(w, kp.mu, dt)
    c, s = np.cos(x), np.sin(x)
    a = 1.0 / alpha
    k = a * (1.0 - c)
    r = a * (1.0 - ecos * c + esin * s)
    f = (1.0 - k / r0)[..., None]
    g = (dt - (x - s) / n)[..., None]
    fd = ((kp.sqrt_mu / sqa) * s / (-r * r0))[..., None]
    gd = (1.0 - k / r)[..., None]
    out = np.empty(w.shape)
    rv0, vv0 = w[..., 0, :], w[..., 1, :]
    out[..., 0, :] = f * rv0 + g * vv0
    out[..., 1, :] = fd * rv0 + gd * vv0
    return out


def _drift_general(w: np.ndarray, mu: np.ndarray, dt: float) -> np.ndarray:
    r, v = kepler_drift(w[..., 0, :], w[..., 1, :], mu, dt)
    return np.stack([r, v], axis=-2)
