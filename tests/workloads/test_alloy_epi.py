"""alloy_epi: bcc shells, pair counts against hand and brute-force counts, Bayesian fit, BIC."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from scidl.workloads import BuildContext, get_workload
from scidl.workloads.alloy_epi.bayes import bic, fit_evidence
from scidl.workloads.alloy_epi.lattice import (
    bcc_sites,
    neighbour_table,
    pair_counts,
    shell_vectors,
    species_pairs,
)
from scidl.workloads.alloy_epi.workload import AlloyEPIConfig, closed_form_summary, make_problem


def test_bcc_shells_distances_and_coordination():
    shells = shell_vectors(6)
    assert [len(v) for v in shells] == [8, 6, 12, 24, 8, 6]
    assert [int((v[0] ** 2).sum()) for v in shells] == [3, 4, 8, 11, 12, 16]  # (2r/a)²


def test_cscl_cell_hand_counts():
    """One cube, A at the corner and B at the centre (B2/CsCl order), periodic.

    Shell 1 (8 neighbours at (±½,±½,±½)) are all of the other species: N¹_AB = 2·8/2 = 8.
    Shell 2 (6 neighbours at (±1,0,0)) are images of the atom itself: N²_AA = N²_BB = 6/2 = 3.
    """
    tables = neighbour_table(1, 2)
    counts = pair_counts(np.array([[0, 1]]), tables, 2)  # pairs (AA, AB, BB)
    assert species_pairs(2) == [(0, 0), (0, 1), (1, 1)]
    np.testing.assert_array_equal(counts[0], [[0, 8, 0], [3, 0, 3]])


def _brute_force_counts(config, n, levels, k):
    """Σ over ordered site pairs of the number of periodic images at each shell distance."""
    sites, period = bcc_sites(n), 2 * n
    images = np.array(list(itertools.product(range(-3, 4), repeat=3))) * period
    m = np.zeros((len(levels), k, k))
    for i, j in itertools.product(range(len(sites)), repeat=2):
        d2 = ((sites[j] - sites[i] + images) ** 2).sum(axis=1)
        for s, lv in enumerate(levels):
            m[s, config[i], config[j]] += np.count_nonzero(d2 == lv)
    return m


def test_pair_counts_match_brute_force_on_random_cell():
    rng = np.random.default_rng(0)
    n, k, shells = 2, 3, 4
    config = rng.integers(0, k, size=2 * n**3)
    got = pair_counts(config[None], neighbour_table(n, shells), k)[0]
    m = _brute_force_counts(config, n, [3, 4, 8, 11], k)
    want = [[m[s, a, a] / 2 if a == b else m[s, a, b] for a, b in species_pairs(k)]
            for s in range(shells)]
    np.testing.assert_array_equal(got, want)


def test_pair_count_sum_rules():
    rng = np.random.default_rng(1)
    n, k = 3, 4
    configs = rng.integers(0, k, size=(5, 2 * n**3))
    counts = pair_counts(configs, neighbour_table(n, 3), k)
    pairs = species_pairs(k)
    for s, z in enumerate([8, 6, 12]):
        assert np.all(counts[:, s].sum(axis=1) == 2 * n**3 * z / 2)
        for a in range(k):
            n_a = (configs == a).sum(axis=1)
            touching = sum((2 if p == (a, a) else 1) * counts[:, s, i]
                           for i, p in enumerate(pairs) if a in p)
            np.testing.assert_array_equal(touching, z * n_a)


def test_evidence_fit_recovers_coefficients_and_noise():
    rng = np.random.default_rng(2)
    n, k = 400, 12
    x = rng.normal(0, 3, (n, k))
    c = rng.integers(10, 40, (n, 3)).astype(float)
    w, a = rng.normal(0, 0.5, k), np.array([1.0, -2.0, 0.5])
    y = x @ w + c @ a + rng.normal(0, 0.2, n)
    fit = fit_evidence(x, y, c)
    z = (fit.coef - w) / fit.std
    assert np.all(np.abs(z) < 4)
    assert np.mean(np.abs(z) < 2) >= 0.75
    assert fit.noise_std == pytest.approx(0.2, rel=0.15)
    np.testing.assert_allclose(fit.fixed, a, atol=0.05)


def test_evidence_fit_agrees_with_sklearn_bayesian_ridge():
    from sklearn.linear_model import BayesianRidge

    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 8))
    y = x @ rng.normal(size=8) + rng.normal(0, 0.5, 200)
    ours = fit_evidence(x, y, max_iter=1000, tol=1e-12)
    ref = BayesianRidge(fit_intercept=False, alpha_1=0, alpha_2=0, lambda_1=0, lambda_2=0,
                        tol=1e-12, max_iter=1000).fit(x, y)
    np.testing.assert_allclose(ours.coef, ref.coef_, rtol=1e-6)
    assert ours.alpha == pytest.approx(ref.lambda_, rel=1e-4)  # weight precision
    assert ours.beta == pytest.approx(ref.alpha_, rel=1e-4)  # noise precision


def test_bic_formula():
    assert bic(4.0, 100, 3) == pytest.approx(100 * np.log(0.04) + 3 * np.log(100))


def _tiny() -> AlloyEPIConfig:
    return AlloyEPIConfig(n_species=3, supercell=3, true_shells=2, max_shells=4,
                          n_train=150, n_test=200)


def test_bic_picks_true_shells_and_uncertainties_cover_truth():
    prob = make_problem(_tiny(), seed=0)
    out = closed_form_summary(prob, 4)
    assert out["bic_best_shells"] == 2
    assert out["bayes_test_rmse_ratio"] < 1.2
    assert out["within_2sigma"] >= 0.8


def test_network_path_reaches_noise_floor():
    wl = get_workload("alloy_epi")
    torch.manual_seed(0)
    task = wl.build(_tiny(), BuildContext(seed=0))
    assert task.full_batch and task.headline == "test_rmse_ratio"
    x, y = task.train_data.tensors
    opt = torch.optim.Adam(task.model.parameters(), lr=3e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 300)
    for _ in range(300):
        opt.zero_grad()
        task.loss(task.model, (x, y)).backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        out = task.evaluate(task.model, task.val_data)
    assert out["fit_shells"] == 2
    assert out["test_rmse_ratio"] < 1.2
