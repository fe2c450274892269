"""LARS / LARC / LAMB steps against hand-computed values; registry selection."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from scidl.optim import OptimConfig, build_optimizer, optimizer_names
from scidl.optim.lamb import LAMB
from scidl.optim.lars import LARS


def _param(values, shape=(1, 2)):
    return nn.Parameter(torch.tensor(values, dtype=torch.float64).reshape(shape))


def test_every_optimizer_selectable_by_name():
    names = optimizer_names()
    for n in ("sgd", "adam", "adamw", "lars", "larc", "lamb", "anderson"):
        assert n in names
    model = nn.Linear(3, 2)
    for n in ("lars", "larc", "lamb", "anderson"):
        opt = build_optimizer(model, OptimConfig(name=n))
        assert isinstance(opt, torch.optim.Optimizer)
    with pytest.raises(KeyError, match="did you mean"):
        build_optimizer(model, OptimConfig(name="lamb2"))


def test_lars_two_steps_hand_computed():
    w = _param([3.0, 4.0])  # ||w|| = 5
    opt = LARS([w], lr=0.1, momentum=0.9, weight_decay=0.1, trust_coefficient=0.01, eps=0.0)
    w.grad = torch.tensor([[0.6, 0.8]], dtype=torch.float64)  # ||g|| = 1
    opt.step()
    # local = 0.01*5/(1+0.1*5) = 1/30; v = 0.1/30 * (g + 0.1 w) = [0.003, 0.004]
    assert torch.allclose(w.detach(), torch.tensor([[2.997, 3.996]], dtype=torch.float64))
    w.grad = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    opt.step()
    wn = math.hypot(2.997, 3.996)
    local = 0.01 * wn / (1.0 + 0.1 * wn)
    v = [0.9 * 0.003 + 0.1 * local * (0.6 + 0.1 * 2.997),
         0.9 * 0.004 + 0.1 * local * (0.8 + 0.1 * 3.996)]
    expect = torch.tensor([[2.997 - v[0], 3.996 - v[1]]], dtype=torch.float64)
    assert torch.allclose(w.detach(), expect, atol=1e-12)


@pytest.mark.parametrize("lr", [0.1, 0.01])
def test_larc_clips_the_layer_rate_at_lr(lr):
    w = _param([3.0, 4.0])
    opt = LARS([w], lr=lr, momentum=0.0, weight_decay=0.0, trust_coefficient=0.01, eps=0.0,
               clip=True)
    w.grad = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    opt.step()
    rate = min(0.01 * 5 / 1, lr)  # local rate 0.05 clipped at lr (LARC)
    expect = torch.tensor([[3 - rate * 0.6, 4 - rate * 0.8]], dtype=torch.float64)
    assert torch.allclose(w.detach(), expect)


def test_lars_excludes_1d_params_and_zero_norms():
    b = _param([1.0, -2.0], shape=(2,))
    z = _param([0.0, 0.0])  # ||w|| = 0 -> ratio 1
    opt = LARS([b, z], lr=0.5, momentum=0.0, weight_decay=0.3, trust_coefficient=1e-3)
    b.grad = torch.tensor([0.2, 0.4], dtype=torch.float64)
    z.grad = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    opt.step()
    assert torch.allclose(b.detach(), torch.tensor([0.9, -2.2], dtype=torch.float64))  # plain SGD
    assert torch.allclose(z.detach(), torch.tensor([[-0.5, -0.5]], dtype=torch.float64))
    b2 = _param([1.0, -2.0], shape=(2,))
    opt2 = LARS([b2], lr=0.5, momentum=0.0, weight_decay=0.3, trust_coefficient=1e-3,
                exclude_1d=False)
    b2.grad = torch.tensor([0.2, 0.4], dtype=torch.float64)
    opt2.step()
    assert not torch.allclose(b2.detach(), torch.tensor([0.9, -2.2], dtype=torch.float64))


def test_lamb_step_hand_computed():
    lr, wd, eps = 0.01, 0.1, 1e-6
    w = _param([3.0, 4.0])
    opt = LAMB([w], lr=lr, betas=(0.9, 0.999), eps=eps, weight_decay=wd)
    g = [0.5, -2.0]
    w.grad = torch.tensor([g], dtype=torch.float64)
    opt.step()
    # t=1: m_hat = g, v_hat = g^2 -> r = g / (|g| + eps)
    r = [gi / (abs(gi) + eps) + wd * wi for gi, wi in zip(g, [3.0, 4.0], strict=True)]
    ratio = 5.0 / math.hypot(*r)
    expect = [3.0 - lr * ratio * r[0], 4.0 - lr * ratio * r[1]]
    assert torch.allclose(w.detach(), torch.tensor([expect], dtype=torch.float64), atol=1e-12)
    # t=2 with gradient g2: bias-corrected moments
    g2 = [1.0, 1.0]
    w.grad = torch.tensor([g2], dtype=torch.float64)
    opt.step()
    b1, b2 = 0.9, 0.999
    m = [(b1 * (1 - b1) * a + (1 - b1) * c) / (1 - b1**2) for a, c in zip(g, g2, strict=True)]
    v = [(b2 * (1 - b2) * a * a + (1 - b2) * c * c) / (1 - b2**2) for a, c in zip(g, g2, strict=True)]
    r2 = [mi / (math.sqrt(vi) + eps) + wd * xi for mi, vi, xi in zip(m, v, expect, strict=True)]
    ratio2 = math.hypot(*expect) / math.hypot(*r2)
    expect2 = [xi - lr * ratio2 * ri for xi, ri in zip(expect, r2, strict=True)]
    assert torch.allclose(w.detach(), torch.tensor([expect2], dtype=torch.float64), atol=1e-12)


def test_lamb_1d_param_takes_plain_adam_step():
    b = _param([1.0, 2.0], shape=(2,))
    opt = LAMB([b], lr=0.1, weight_decay=0.5, eps=1e-8)
    b.grad = torch.tensor([0.3, -0.3], dtype=torch.float64)
    opt.step()
    assert torch.allclose(b.detach(), torch.tensor([0.9, 2.1], dtype=torch.float64), atol=1e-6)
