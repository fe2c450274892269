"""geneexpr_ans: generator, class pairs, splits, and a tiny autoencoder run with node saliency."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scidl.workloads import BuildContext, get_workload
from scidl.workloads.geneexpr_ans.data import digits, stratified_split, synthetic_expression
from scidl.workloads.geneexpr_ans.nets import SigmoidAE
from scidl.workloads.geneexpr_ans.workload import GeneExprConfig


def _small(seed=0):
    return synthetic_expression(seed, n_tissues=3, n_genes=200, per_class=20, n_programs=10,
                                genes_per_program=20)


def test_generator_shapes_names_and_seed():
    d = _small()
    assert d.x.shape == (120, 200)
    assert d.classes == [f"tissue{t}_{s}" for t in range(3) for s in ("normal", "tumour")]
    assert np.bincount(d.y).tolist() == [20] * 6
    assert np.array_equal(d.x, _small().x) and not np.array_equal(d.x, _small(1).x)


def test_tissue_programs_separate_tissues():
    d = _small()
    t0, t1 = d.pair_mask("tissue0"), d.pair_mask("tissue1")
    assert t0.sum() == t1.sum() == 40 and not (t0 & t1).any()
    # the class means differ by far more than the noise of a mean over 40 samples
    gap = np.abs(d.x[t0].mean(axis=0) - d.x[t1].mean(axis=0)).max()
    assert gap > 1.0
    with pytest.raises(ValueError, match="no class matches"):
        d.pair_mask("liver")


def test_stratified_split():
    y = np.repeat(np.arange(4), 10)
    tr, va = stratified_split(y, 0.3, seed=0)
    assert len(set(tr) & set(va)) == 0 and len(tr) + len(va) == 40
    assert np.bincount(y[va]).tolist() == [3, 3, 3, 3]


def test_digits_sanity_data():
    d = digits()
    assert d.x.shape == (1797, 64) and 0 <= d.x.min() and d.x.max() <= 1
    assert d.pair_mask("digit0").sum() == 178


def test_tiny_autoencoder_finds_a_classifying_node():
    cfg = GeneExprConfig(n_tissues=3, n_genes=300, per_class=30, n_programs=10,
                         genes_per_program=30, latent=8, hidden=64)
    wl = get_workload("geneexpr_ans")
    torch.manual_seed(0)
    task = wl.build(cfg, BuildContext(seed=0))
    assert isinstance(task.model, SigmoidAE)
    assert task.headline == "tissue0_vs_tissue1/best_sns_node_auc" and task.higher_is_better
    x = task.train_data.tensors[0]
    opt = torch.optim.Adam(task.model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        loss = task.loss(task.model, [x[idx]])
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    task.model.eval()
    with torch.no_grad():
        out = task.evaluate(task.model, task.val_data)
    key = "tissue0_vs_tissue1"
    assert out[f"{key}/best_sns_node_auc"] >= 0.9
    assert out[f"{key}/best_sns"] < 0.5
    assert -1 <= out[f"{key}/spearman_neg_sns_auc"] <= 1
    assert out[f"{key}/pca_best_auc"] >= 0.9


def test_bad_pair_fails_at_build():
    wl = get_workload("geneexpr_ans")
    cfg = GeneExprConfig(n_tissues=2, n_genes=60, per_class=10, n_programs=6,
                         genes_per_program=5, latent=4, hidden=8, pairs=[("tissue0", "tissue9")])
    with pytest.raises(ValueError, match="tissue9"):
        wl.build(cfg, BuildContext(seed=0))
