"""The α-β-γ least-squares fit recovers known parameters from synthetic timings."""

from __future__ import annotations

import numpy as np
import pytest

from scidl.scaling.collectives import busbw_factor, fit_alpha_beta_gamma, model_coefficients


def _synthetic(alpha, beta, gamma, ops, noise, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in (2, 4, 8):
        for n in (2**k for k in range(10, 25, 2)):
            for op in ops:
                a, b, g = model_coefficients(op, p, n)
                t = (a * alpha + b * beta + g * gamma) * (1 + noise * rng.standard_normal())
                rows.append({"op": op, "ranks": p, "bytes": n, "time_s": t})
    return rows


def test_fit_recovers_exact_parameters():
    rows = _synthetic(50e-6, 2e-10, 5e-11, ("allreduce", "allgather", "reduce_scatter"), 0.0)
    fit = fit_alpha_beta_gamma(rows)
    assert fit["alpha"] == pytest.approx(50e-6, rel=1e-6)
    assert fit["beta"] == pytest.approx(2e-10, rel=1e-6)
    assert fit["gamma"] == pytest.approx(5e-11, rel=1e-5)
    assert fit["rel_rms"] < 1e-6


def test_fit_with_noise_is_close():
    rows = _synthetic(20e-6, 1e-9, 2e-10, ("allreduce", "reduce_scatter", "allgather"), 0.05)
    fit = fit_alpha_beta_gamma(rows)
    assert fit["alpha"] == pytest.approx(20e-6, rel=0.15)
    assert fit["beta"] == pytest.approx(1e-9, rel=0.1)
    assert fit["bandwidth"] == pytest.approx(1e9, rel=0.1)
    assert 0.02 < fit["rel_rms"] < 0.1


def test_fit_allreduce_only_folds_gamma_into_beta():
    # β and γ are not separable from allreduce alone: β absorbs γ/2
    rows = _synthetic(10e-6, 1e-9, 2e-10, ("allreduce",), 0.0)
    fit = fit_alpha_beta_gamma(rows)
    assert fit["gamma"] == 0.0
    assert fit["beta"] == pytest.approx(1e-9 + 2e-10 / 2, rel=1e-6)
    assert fit["alpha"] == pytest.approx(10e-6, rel=1e-6)


def test_fit_needs_rows_and_busbw():
    with pytest.raises(ValueError):
        fit_alpha_beta_gamma([{"op": "allreduce", "ranks": 1, "bytes": 8, "time_s": 1.0}])
    assert busbw_factor("allreduce", 4) == pytest.approx(1.5)
    assert busbw_factor("allgather", 4) == pytest.approx(0.75)
    assert busbw_factor("allreduce", 1) == 0.0
