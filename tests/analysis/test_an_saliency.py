"""Autoencoder node saliency: NED and SNS on hand-made histograms, AUC against sklearn."""

from __future__ import annotations

import numpy as np
import pytest

from scidl.analysis.saliency import (
    ned,
    node_auc,
    node_histograms,
    saliency_report,
    sns,
    sns_from_counts,
)


def test_histograms_bin_edges():
    acts = np.array([[0.0], [0.05], [0.1], [0.55], [0.999], [1.0]])
    assert node_histograms(acts, bins=10)[0].tolist() == [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]


def test_ned_hand_values():
    counts = np.array([
        [5, 5, 5, 5, 0, 0],  # uniform over 4 occupied bins: H = log2 4 → NED 0
        [0, 0, 9, 0, 0, 0],  # one occupied bin → NED 1 by definition
        [2, 1, 1, 0, 0, 0],  # H = 1.5 bits over 3 occupied bins
    ])
    got = ned(counts)
    assert got[0] == pytest.approx(0.0, abs=1e-12)
    assert got[1] == 1.0
    assert got[2] == pytest.approx(1 - 1.5 / np.log2(3))


def test_sns_two_bin_hand_example():
    # lower bin: 1 pos, 3 neg; upper bin: 3 pos, 1 neg; P = (½, ½).
    # pos-high: −½ log2(1 − ¼) − ½ log2(¾) = −log2 ¾ ≈ 0.415; neg-high: −log2 ¼ = 2.
    got = sns_from_counts([[1, 3]], [[3, 1]], pseudo_count=0.0)
    assert got[0] == pytest.approx(-np.log2(0.75))


def test_sns_perfect_uninformative_and_symmetric():
    pos = np.array([[0, 0, 0, 0, 0, 0, 0, 4, 6, 0]])
    neg = np.array([[3, 7, 0, 0, 0, 0, 0, 0, 0, 0]])
    assert sns_from_counts(pos, neg, pseudo_count=0.0)[0] == pytest.approx(0.0)
    # swapping the classes changes nothing: SNS takes the better assignment
    assert sns_from_counts(neg, pos, pseudo_count=0.0)[0] == pytest.approx(0.0)
    # smoothing makes a perfect split cost a little but stay far below 1 bit
    assert 0 < sns_from_counts(pos, neg)[0] < 0.2
    # same histogram for both classes: q_b = ½ everywhere → exactly 1 bit
    same = np.array([[1, 2, 3, 4, 5, 5, 4, 3, 2, 1]])
    assert sns_from_counts(same, same)[0] == pytest.approx(1.0)


def test_node_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.4
    acts = rng.random((200, 3))
    acts[:, 0] += 0.5 * labels  # informative, positive orientation
    acts[:, 1] -= 0.3 * labels  # informative, negative orientation
    acts[:, 2] = np.round(acts[:, 2], 1)  # ties
    want = [max(a, 1 - a) for a in (roc_auc_score(labels, acts[:, j]) for j in range(3))]
    np.testing.assert_allclose(node_auc(acts, labels), want, rtol=1e-12)


def test_sns_ranks_nodes_by_separation():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 300)
    noise = rng.normal(0, 0.08, (600, 3))
    acts = np.clip(np.stack([
        0.25 + 0.5 * labels,  # clean split across the midpoint
        0.4 + 0.2 * labels,  # partial split
        np.full(600, 0.5),  # no information
    ], axis=1) + noise, 0, 1)
    rep = saliency_report(acts, labels)
    assert rep["order"].tolist() == [0, 1, 2]
    assert rep["auc"][0] > rep["auc"][1] > rep["auc"][2]
    # an uninformative node costs about 1 bit (a little less: q_b is fitted on the same samples)
    assert 0.85 < sns(acts, labels)[2] < 1.1
