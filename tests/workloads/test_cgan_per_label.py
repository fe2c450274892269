"""cgan_per_label: loss separation, per-label isolation, the sample-quality metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scidl.workloads.base import BuildContext
from scidl.workloads.cgan_per_label.data import load_images
from scidl.workloads.cgan_per_label.dist import assign_labels
from scidl.workloads.cgan_per_label.metrics import frechet_distance, inception_score
from scidl.workloads.cgan_per_label.nets import GANPair, PerLabelGAN
from scidl.workloads.cgan_per_label.workload import CGANConfig, CGANPerLabel


def _grads(model, loss):
    model.zero_grad()
    loss.backward(retain_graph=True)
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
            for n, p in model.named_parameters()}


def test_one_loss_gives_d_its_loss_and_g_its_loss():
    torch.manual_seed(0)
    pair = GANPair(z_dim=4, hidden=16, n_cond=10)
    x, y, z = torch.randn(8, 64), torch.randint(0, 10, (8,)), torch.randn(8, 4)
    ld, lg = pair(x, y, z)
    both, only_d, only_g = _grads(pair, ld + lg), _grads(pair, ld), _grads(pair, lg)
    for n in both:
        ref = only_d[n] if n.startswith("D.") else only_g[n]
        assert torch.allclose(both[n], ref, atol=1e-7), n
    assert all(only_g[n].abs().sum() == 0 for n in only_g if n.startswith("D."))
    assert all(only_d[n].abs().sum() == 0 for n in only_d if n.startswith("G."))


def test_per_label_pairs_only_see_their_label():
    torch.manual_seed(0)
    m = PerLabelGAN([3, 7], z_dim=4, hidden=16)
    x, z = torch.randn(6, 64), torch.randn(6, 4)
    y = torch.tensor([3, 3, 3, 3, 3, 3])
    ld, lg = m(x, y, z)
    (ld + lg).backward()
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in m.pairs[1].parameters())
    assert any(p.grad.abs().sum() > 0 for p in m.pairs[0].parameters())
    # pair 3's loss equals the pair evaluated alone on its samples
    d0, g0 = m.pairs[0](x, y, z)
    assert torch.allclose(ld, d0) and torch.allclose(lg, g0)


def test_inception_score_limits():
    onehot = np.eye(10)[np.arange(1000) % 10]
    assert inception_score(onehot) == pytest.approx(10.0, rel=1e-6)
    assert inception_score(np.tile(np.eye(10)[0], (100, 1))) == pytest.approx(1.0)
    assert inception_score(np.full((50, 10), 0.1)) == pytest.approx(1.0)


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20000, 3))
    b = rng.standard_normal((20000, 3)) + np.array([1.0, 2.0, 0.0])
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, b) == pytest.approx(5.0, abs=0.1)
    c = 2.0 * rng.standard_normal((20000, 3))  # sigma 2: trace term 3 * (1 + 4 - 2*2) = 3
    assert frechet_distance(a, c) == pytest.approx(3.0, abs=0.15)


def test_assign_labels_layouts():
    assert assign_labels([0, 1, 2, 3, 4], 2) == {0: [0], 1: [1], 2: [0], 3: [1], 4: [0]}
    assert assign_labels([4, 9], 4) == {4: [0, 2], 9: [1, 3]}
    assert assign_labels([1], 1) == {1: [0]}


def test_workload_builds_steps_and_evaluates():
    cfg = CGANConfig(mode="per_label", labels=[0, 1], eval_per_label=20, classifier_steps=50)
    torch.manual_seed(0)
    task = CGANPerLabel().build(cfg, BuildContext(seed=0))
    Xtr, ytr, Xte, _ = load_images(0, cfg.test_fraction, cfg.labels)
    assert set(ytr.tolist()) == {0, 1} and Xtr.min() >= -1 and Xtr.max() <= 1
    opt = torch.optim.Adam(task.model.parameters(), lr=2e-4)
    loss = task.loss(task.model, (Xtr[:32], ytr[:32]))
    loss.backward()
    opt.step()
    with torch.no_grad():  # as the trainer calls it
        m = task.evaluate(task.model.eval(), task.val_data)
    assert set(m) == {"inception_score", "fid", "label_accuracy", "pixel_std"}
    assert all(np.isfinite(v) for v in m.values())
    assert 1.0 <= m["inception_score"] <= 2.0 + 1e-6  # two labels at most
