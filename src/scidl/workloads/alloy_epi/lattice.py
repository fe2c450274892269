"""bcc supercells, coordination shells and per-shell species-pair counts.

Sites of an ``n x n x n`` supercell of the conventional bcc cube (2 atoms per cube, lattice
constant a = 1) are stored in *doubled* integer coordinates: corners ``(2i, 2j, 2k)`` and
body centres ``(2i+1, 2j+1, 2k+1)``; a vector joins two bcc sites iff its three components
have the same parity. Shell s is the s-th smallest distance: in doubled units |v|² =
3, 4, 8, 11, 12, 16 with coordination z = 8, 6, 12, 24, 8, 6.

Pair counts of a periodic crystal (each unordered pair once, images included):

    N_s^{ab} = ½ Σ_i Σ_{v ∈ shell s} [σ_i = a][σ_{i+v} = b] + (a ≠ b) · (same with a, b swapped),

so Σ_{a≤b} N_s^{ab} = N z_s / 2 and 2 N_s^{aa} + Σ_{b≠a} N_s^{ab} = z_s n_a.
"""

from __future__ import annotations

import itertools

import numpy as np


def shell_vectors(n_shells: int) -> list[np.ndarray]:
    """Neighbour vectors (doubled coordinates) of the first ``n_shells`` bcc shells."""
    r = 2 * n_shells + 2
    rng = np.arange(-r, r + 1)
    v = np.array(list(itertools.product(rng, rng, rng)))
    same_parity = (v % 2 == v[:, :1] % 2).all(axis=1)
    v = v[same_parity & (np.abs(v).sum(axis=1) > 0)]
    d2 = (v**2).sum(axis=1)
    levels = np.unique(d2)[:n_shells]
    return [v[d2 == lv] for lv in levels]


def bcc_sites(n: int) -> np.ndarray:
    """``(2 n³, 3)`` doubled coordinates of the supercell's sites (corners, then centres)."""
    cube = np.array(list(itertools.product(range(n), repeat=3))) * 2
    return np.concatenate([cube, cube + 1])


def neighbour_table(n: int, n_shells: int) -> list[np.ndarray]:
    """Per shell an ``(N, z_s)`` table: index of the site at ``site + v`` (periodic)."""
    sites = bcc_sites(n)
    period = 2 * n
    index = -np.ones((period,) * 3, dtype=np.int64)
    index[tuple(sites.T)] = np.arange(len(sites))
    tables = []
    for vecs in shell_vectors(n_shells):
        tgt = (sites[:, None, :] + vecs[None, :, :]) % period
        tab = index[tgt[..., 0], tgt[..., 1], tgt[..., 2]]
        assert (tab >= 0).all(), "a shell vector left the bcc lattice"
        tables.append(tab)
    return tables


def species_pairs(n_species: int, unlike_only: bool = False) -> list[tuple[int, int]]:
    """Species pairs (a ≤ b, or a < b if ``unlike_only``) in a fixed order."""
    return [(a, b) for a in range(n_species) for b in range(a, n_species)
            if not (unlike_only and a == b)]


def pair_counts(
    configs: np.ndarray, tables: list[np.ndarray], n_species: int, unlike_only: bool = False
) -> np.ndarray:
    """Pair counts ``(n_configs, n_shells, n_pairs)`` in :func:`species_pairs` order.

    Args:
        configs: ``(n_configs, N)`` integer species of every site.
        tables: neighbour tables from :func:`neighbour_table`.
        n_species: number of species K.
        unlike_only: only the K(K−1)/2 unlike pairs (the identifiable EPI features).
    """
    onehot = np.eye(n_species)[configs]  # (B, N, K)
    pairs = species_pairs(n_species, unlike_only)
    out = np.empty((len(configs), len(tables), len(pairs)))
    for s, tab in enumerate(tables):
        # M[a, b] = Σ_i Σ_v [σ_i = a][σ_{i+v} = b]  (ordered, every pair seen twice)
        m = np.einsum("bnk,bnzl->bkl", onehot, onehot[:, tab])
        for p, (a, c) in enumerate(pairs):
            out[:, s, p] = m[:, a, a] / 2 if a == c else (m[:, a, c] + m[:, c, a]) / 2
    return out
