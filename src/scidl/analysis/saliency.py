"""Autoencoder node saliency (Fan 2018/2019, arXiv 1711.07871; Fan et al., arXiv 1901.11152).

Every latent node with a sigmoid activation a ∈ [0, 1] is summarised by a B-bin histogram
over the samples (bins of equal width on [0, 1], B = 10 by default).

* Normalised entropy difference (unsupervised "interestingness" of one histogram with
  probabilities p_b over its N_occ occupied bins):

      NED = 1 − H / log₂ N_occ,   H = −Σ_b p_b log₂ p_b   (NED = 1 when N_occ = 1).

* Supervised node saliency for a binary pair: with P_b the share of the pair's samples in
  bin b (b = 1 … B) and q_b the share of bin b's samples that belong to the class assigned
  to high activations,

      SNS = min over both class assignments of −Σ_b P_b · log₂(q_b if b > B/2 else 1 − q_b).

  SNS is the cross-entropy (bits) of "class = high half of the activation range", so
  **lower SNS = better classifying node** (0 for a perfect split; 1 bit for a node that
  carries no class information). q_b uses ``pseudo_count`` samples of each class per bin
  (Jeffreys smoothing, 0.5) so that a single mis-binned sample costs a finite penalty.

The node AUC (orientation-free, max(AUC, 1 − AUC)) is the reference "how good a
classifier is this node" used to check SNS rankings.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def node_histograms(acts: np.ndarray, bins: int = 10) -> np.ndarray:
    """Counts ``(n_nodes, bins)`` of activations ``(n_samples, n_nodes)`` on [0, 1]."""
    idx = np.clip((np.asarray(acts) * bins).astype(int), 0, bins - 1)
    out = np.zeros((idx.shape[1], bins))
    for j in range(idx.shape[1]):
        out[j] = np.bincount(idx[:, j], minlength=bins)
    return out


def ned(counts: np.ndarray) -> np.ndarray:
    """Normalised entropy difference of each histogram row (see module docstring)."""
    counts = np.atleast_2d(np.asarray(counts, dtype=float))
    p = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nansum(np.where(p > 0, p * np.log2(p), 0.0), axis=1)
    occupied = (counts > 0).sum(axis=1)
    out = np.ones(len(counts))
    many = occupied > 1
    out[many] = 1.0 - h[many] / np.log2(occupied[many])
    return out


def sns_from_counts(
    counts_pos: np.ndarray, counts_neg: np.ndarray, pseudo_count: float = 0.5
) -> np.ndarray:
    """SNS of each node from per-class histograms ``(n_nodes, bins)`` (either assignment)."""
    pos = np.atleast_2d(np.asarray(counts_pos, dtype=float))
    neg = np.atleast_2d(np.asarray(counts_neg, dtype=float))
    bins = pos.shape[1]
    total = pos + neg
    p = total / total.sum(axis=1, keepdims=True)
    upper = (np.arange(1, bins + 1) > bins / 2)[None, :]

    def cross_entropy(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            q = (hi + pseudo_count) / (hi + lo + 2 * pseudo_count)  # share of "high" class
            bits = -np.log2(np.where(upper, q, 1.0 - q))
        return np.where(p > 0, p * bits, 0.0).sum(axis=1)  # empty bins contribute nothing

    return np.minimum(cross_entropy(pos, neg), cross_entropy(neg, pos))


def sns(acts: np.ndarray, labels: np.ndarray, bins: int = 10,
        pseudo_count: float = 0.5) -> np.ndarray:
    """SNS per node for activations ``(n, nodes)`` and binary ``labels`` (0/1)."""
    labels = np.asarray(labels).astype(bool)
    acts = np.asarray(acts)
    return sns_from_counts(node_histograms(acts[labels], bins),
                           node_histograms(acts[~labels], bins), pseudo_count)


def node_auc(acts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Orientation-free ROC AUC, max(AUC, 1 − AUC), of each column as a score (Mann–Whitney)."""
    acts = np.atleast_2d(np.asarray(acts, dtype=float))
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("node_auc needs samples of both classes")
    ranks = np.apply_along_axis(rankdata, 0, acts)  # average ranks handle ties
    auc = (ranks[labels].sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.maximum(auc, 1.0 - auc)


def saliency_report(acts: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict[str, np.ndarray]:
    """NED (all samples of the pair), SNS, node AUC and the node order by ascending SNS."""
    s = sns(acts, labels, bins)
    return {
        "ned": ned(node_histograms(acts, bins)),
        "sns": s,
        "auc": node_auc(acts, labels),
        "order": np.argsort(s, kind="stable"),
    }
