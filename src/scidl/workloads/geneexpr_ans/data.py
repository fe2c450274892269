"""Data for ``geneexpr_ans``: a synthetic gene-expression generator and a digits sanity case.

Synthetic log-expression of gene g in sample i of tissue t and state k ∈ {normal, tumour}:

    x_ig = b_g + Σ_p a_ip L_pg + ε_ig,   a_ip = A_tkp · exp(η_ip),   ε ~ N(0, σ²), η ~ N(0, τ²),

with sparse program loadings L (each program touches ``genes_per_program`` genes), a
tissue profile A (each tissue switches on its own programs strongly and shared programs
weakly) and tumour programs (shared proliferation programs plus one per tissue) added in
the tumour state. Classes are named ``tissue<t>_normal`` / ``tissue<t>_tumour``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelledData:
    """Samples ``x`` (n, features), integer ``y`` and the class names indexed by ``y``."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]

    def pair_mask(self, name: str) -> np.ndarray:
        """Samples whose class is ``name`` or starts with ``name + '_'`` (tissue0 → both states)."""
        hit = [i for i, c in enumerate(self.classes) if c == name or c.startswith(name + "_")]
        if not hit:
            raise ValueError(f"no class matches {name!r}; classes: {', '.join(self.classes)}")
        return np.isin(self.y, hit)


def synthetic_expression(
    seed: int,
    n_tissues: int = 6,
    n_genes: int = 2000,
    per_class: int = 100,
    n_programs: int = 40,
    genes_per_program: int = 60,
    tumour_effect: float = 1.5,
    noise_std: float = 1.0,
    activation_jitter: float = 0.3,
) -> LabelledData:
    """Generate tissue × {normal, tumour} samples (see module docstring)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(6.0, 1.5, n_genes)
    loadings = np.zeros((n_programs, n_genes))
    for p in range(n_programs):
        genes = rng.choice(n_genes, genes_per_program, replace=False)
        loadings[p, genes] = rng.normal(0.0, 1.0, genes_per_program)
    # Programs 0..T-1: tissue identity; T..2T-1: tissue-specific tumour; 2T, 2T+1: shared
    # proliferation; the rest: background programs active everywhere at random levels.
    if n_programs < 2 * n_tissues + 2:
        raise ValueError("n_programs must be at least 2 * n_tissues + 2")
    profile = np.zeros((n_tissues, 2, n_programs))
    background = np.arange(2 * n_tissues + 2, n_programs)
    for t in range(n_tissues):
        profile[t, :, t] = rng.uniform(2.0, 3.0)
        profile[t, :, background] = rng.uniform(0.0, 1.0, len(background))[:, None]
        profile[t, 1, n_tissues + t] = tumour_effect
        profile[t, 1, 2 * n_tissues:2 * n_tissues + 2] = tumour_effect
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    classes: list[str] = []
    for t in range(n_tissues):
        for k, state in enumerate(("normal", "tumour")):
            act = profile[t, k] * np.exp(rng.normal(0, activation_jitter, (per_class, n_programs)))
            xs.append(base + act @ loadings + rng.normal(0, noise_std, (per_class, n_genes)))
            ys.append(np.full(per_class, len(classes)))
            classes.append(f"tissue{t}_{state}")
    return LabelledData(np.concatenate(xs).astype(np.float32), np.concatenate(ys), classes)


def digits() -> LabelledData:
    """scikit-learn's 8x8 digits (1797 samples, bundled, no download), pixels / 16."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return LabelledData((d.data / 16.0).astype(np.float32), d.target,
                        [f"digit{i}" for i in range(10)])


def stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (train, val) with ``val_fraction`` of every class held out."""
    rng = np.random.default_rng(seed + 7919)
    val = []
    for c in np.unique(y):
        idx = rng.permutation(np.nonzero(y == c)[0])
        val.append(idx[: max(1, int(round(val_fraction * len(idx))))])
    is_val = np.zeros(len(y), dtype=bool)
    is_val[np.concatenate(val)] = True
    return np.nonzero(~is_val)[0], np.nonzero(is_val)[0]
