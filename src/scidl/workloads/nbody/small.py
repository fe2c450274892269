"""The Wisdom–Holman inner loop in plain Python floats, for small batches.

A numpy call costs about a microsecond whatever its size, and one map step takes a few
dozen of them, so a single system (or a handful) is integrated faster with Python floats
than with arrays: the same formulas as :func:`scidl.workloads.nbody.kepler.kepler_drift_pv`
and :func:`scidl.workloads.nbody.wh.interaction_kick` (``test_small_batch_loop_matches_numpy``
checks they agree to rounding), about 10 µs per step and system on one core. Only the
exact interaction kick is supported; large batches and learned kicks use the numpy loop.
"""

from __future__ import annotations

import math

import numpy as np

from scidl.workloads.nbody.kepler import kepler_drift

#: systems × planets up to which :func:`scidl.workloads.nbody.wh.integrate` uses this loop
MAX_ORBITS = 32


def _kepler(st: list[float], mu: float, sqmu: float, dt: float) -> None:
    """Kepler drift of one orbit ``st = [x, y, z, vx, vy, vz]`` in place (elliptic short
    steps: eccentric-anomaly Newton; otherwise the universal-variable solver)."""
    x, y, z, vx, vy, vz = st
    r0 = math.sqrt(x * x + y * y + z * z)
    rv = x * vx + y * vy + z * vz
    alpha = 2.0 / r0 - (vx * vx + vy * vy + vz * vz) / mu
    ok = alpha > 0.0
    if ok:
        sqa = math.sqrt(alpha)
        n = sqmu * alpha * sqa
        mean = n * dt
        ecos = 1.0 - r0 * alpha
        esin = rv * sqa / sqmu
        d = 1.0 - ecos
        e = mean / d
        e = e - 0.5 * esin * e * e / d
        dx = 0.0
        for _ in range(2):
            c, s = math.cos(e), math.sin(e)
            dx = (e - ecos * s - esin * c + esin - mean) / (1.0 - ecos * c + esin * s)
            e = e - dx
        ok = abs(dx) <= 1e-8 * abs(e)
    if not ok:
        r1, v1 = kepler_drift(np.array([[x, y, z]]), np.array([[vx, vy, vz]]), mu, dt)
        st[:] = [*r1[0].tolist(), *v1[0].tolist()]
        return
    c, s = math.cos(e), math.sin(e)
    a = 1.0 / alpha
    k = a * (1.0 - c)
    r = a * (1.0 - ecos * c + esin * s)
    f = 1.0 - k / r0
    g = dt - (e - s) / n
    fd = -(sqmu / sqa) * s / (r * r0)
    gd = 1.0 - k / r
    st[:] = [f * x + g * vx, f * y + g * vy, f * z + g * vz,
             fd * x + gd * vx, fd * y + gd * vy, fd * z + gd * vz]


def _kick(sys_: list[list[float]], terms: list[tuple[list[float], float, list[float]]],
          h: float) -> None:
    """Interaction kick of one system's planets (``sys_[i] = [q, u]`` rows of 6) in place:
    ``a'_j = sum_k Kmat_jk c_k d_k / |d_k|^3`` with ``d_k = sum_j G_kj q_j``."""
    n = len(sys_)
    ax = [0.0] * n
    ay = [0.0] * n
    az = [0.0] * n
    for g, c, kcol in terms:
        dx = dy = dz = 0.0
        for j in range(n):
            gj = g[j]
            if gj:
                st = sys_[j]
                dx += gj * st[0]
                dy += gj * st[1]
                dz += gj * st[2]
        r2 = dx * dx + dy * dy + dz * dz
        w = h * c / (r2 * math.sqrt(r2))
        for j in range(n):
            kj = kcol[j] * w
            if kj:
                ax[j] += kj * dx
                ay[j] += kj * dy
                az[j] += kj * dz
    for j in range(n):
        st = sys_[j]
        st[3] += ax[j]
        st[4] += ay[j]
        st[5] += az[j]


def advance(w: np.ndarray, ms: object, h: float, n_steps: int, kick_first: bool) -> None:
    """``n_steps`` merged map steps of stacked Jacobi states ``w`` (B, N, 2, 3) in place:
    each a kick(h) then a Kepler drift(h) (``kick_first``, the drift–kick–drift map) or a
    drift then a kick (kick–drift–kick). ``ms`` is a :class:`~scidl.workloads.nbody.wh.Masses`."""
    b, nb = w.shape[:2]
    planets = [[w[i, j].reshape(6).tolist() for j in range(1, nb)] for i in range(b)]
    com = w[:, 0].copy()
    mu = ms.mu.tolist()  # type: ignore[attr-defined]
    sqmu = [[math.sqrt(x) for x in row] for row in mu]
    g, c, kmat = ms.g, ms.c, ms.kmat  # type: ignore[attr-defined]
    terms = [[(g[i, k].tolist(), float(c[i, k]), kmat[i, :, k].tolist()) for k in range(c.shape[1])]
             for i in range(b)]
    for i in range(b):
        sys_, tm, mui, sqi = planets[i], terms[i], mu[i], sqmu[i]
        for _ in range(n_steps):
            if kick_first:
                _kick(sys_, tm, h)
            for j, st in enumerate(sys_):
                _kepler(st, mui[j], sqi[j], h)
            if not kick_first:
                _kick(sys_, tm, h)
    w[:, 1:] = np.array(planets).reshape(b, nb - 1, 2, 3)
    w[:, 0] = com
    w[:, 0, 0] += n_steps * h * com[:, 1]
