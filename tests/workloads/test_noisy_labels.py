"""noisy_labels: exact noise rates, macro-F1 against scikit-learn, and the F1 drop under noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from scidl.workloads.base import BuildContext
from scidl.workloads.noisy_labels.data import digit_targets, inject_noise, load_split
from scidl.workloads.noisy_labels.sweep import fit_batched, fit_direct, knee, tolerated_noise
from scidl.workloads.noisy_labels.workload import NoisyLabels, NoisyLabelsConfig, macro_f1


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.2, 0.5])
def test_binary_and_multiclass_noise_rates_are_exact(rate):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 1000)
    for kind, yy in (("binary", y % 2), ("multiclass", y)):
        noisy = inject_noise(yy, rate, kind, np.random.default_rng(1))
        assert np.mean(noisy != yy) == pytest.approx(rate, abs=1e-12)
        assert set(np.unique(noisy)) <= set(np.unique(yy)) | ({0, 1} if kind == "binary" else set())


def test_multiclass_noise_is_uniform_over_other_classes():
    y = np.zeros(20000, dtype=np.int64)
    noisy = inject_noise(y, 0.5, "multiclass", np.random.default_rng(0))
    counts = np.bincount(noisy[noisy != 0], minlength=10)[1:]
    assert counts.sum() == 10000 and counts.min() > 0.9 * 10000 / 9 and counts.max() < 1.1 * 10000 / 9


def test_multilabel_noise_flips_exact_share_of_entries():
    Y = digit_targets(np.random.default_rng(0).integers(0, 10, 500), "multilabel")
    noisy = inject_noise(Y, 0.2, "multilabel", np.random.default_rng(3))
    assert noisy.shape == Y.shape and np.mean(noisy != Y) == pytest.approx(0.2)
    again = inject_noise(Y, 0.2, "multilabel", np.random.default_rng(3))
    assert np.array_equal(noisy, again)  # depends only on the seed


def test_digit_targets():
    d = np.arange(10)
    assert digit_targets(d, "binary").tolist() == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    ml = digit_targets(d, "multilabel")
    assert ml[7].tolist() == [0, 1, 1, 0] and ml[8].tolist() == [1, 1, 0, 1]


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_macro_f1_matches_sklearn(kind):
    rng = np.random.default_rng(0)
    y = digit_targets(rng.integers(0, 10, 300), kind)
    pred = inject_noise(y, 0.3, kind, rng)
    ours = macro_f1(y, pred, kind)
    ref = f1_score(y, pred, average="macro", zero_division=0)
    assert ours == pytest.approx(ref, abs=1e-12)
    assert macro_f1(y, y, kind) == 1.0


def test_build_corrupts_train_only_and_data_depends_on_seed():
    wl = NoisyLabels()
    t = wl.build(NoisyLabelsConfig(kind="multiclass", noise=0.2), BuildContext(seed=5))
    Xtr, ytr, Xte, yte = load_split("multiclass", 5)
    assert t.extras["flipped"] == round(0.2 * len(ytr))
    assert np.array_equal(t.val_data[1], yte)  # test labels stay clean
    t2 = wl.build(NoisyLabelsConfig(kind="multiclass", noise=0.2), BuildContext(seed=5))
    assert torch.equal(t.train_data.tensors[1], t2.train_data.tensors[1])


def test_knee_and_tolerance():
    x = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    y = [0.98, 0.97, 0.96, 0.85, 0.7, 0.5]
    assert knee(x, y) == 0.2
    drop = [0.0, 0.01, 0.02, 0.13, 0.28, 0.48]
    assert tolerated_noise(x, drop, 0.05) == pytest.approx(0.2 + 0.03 / 0.11 * 0.1)


def test_binary_f1_drops_with_heavy_noise():
    # both runs in one batched loop keeps the test cheap; 40% flipped labels must cost F1
    tasks = []
    for noise in (0.0, 0.4):
        torch.manual_seed(0)
        tasks.append(NoisyLabels().build(NoisyLabelsConfig(noise=noise, hidden=64),
                                         BuildContext(seed=0)))
    clean, noisy = (r["macro_f1"] for r in fit_batched(tasks, "binary", epochs=6, seeds=(0, 0)))
    assert clean > 0.95
    assert clean - noisy > 0.1


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
def test_batched_training_equals_separate_runs(kind):
    import copy

    tasks = []
    for seed, noise in ((0, 0.1), (1, 0.3)):
        torch.manual_seed(seed)
        cfg = NoisyLabelsConfig(kind=kind, noise=noise, hidden=16)
        tasks.append(NoisyLabels().build(cfg, BuildContext(seed=seed)))
    twins = [copy.deepcopy(t) for t in tasks]
    sep = [fit_direct(t, epochs=1, batch_size=64, seed=s) for t, s in zip(tasks, (0, 1), strict=True)]
    bat = fit_batched(twins, kind, epochs=1, batch_size=64, seeds=(0, 1))
    for b, s in zip(bat, sep, strict=True):
        assert b == pytest.approx(s, abs=1e-6)
    for a, b in zip(tasks, twins, strict=True):
        for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
            assert torch.allclose(p, q, atol=1e-5)
