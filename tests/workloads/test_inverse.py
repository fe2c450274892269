"""inverse: forward model, Tikhonov closed form, loss terms, tiny training run."""

from __future__ import annotations

import math

import torch

from scidl.workloads import BuildContext, get_workload
from scidl.workloads.common.unet import UNet
from scidl.workloads.inverse.nets import PostProcessed
from scidl.workloads.inverse.ops import (
    BlurOperator,
    Tikhonov,
    gradient_symbol,
    make_phantoms,
    psnr,
    tune_alpha,
)
from scidl.workloads.inverse.workload import InverseConfig, inverse_loss


def _dense(op, n: int) -> torch.Tensor:
    """Matrix of a linear image operator (columns = images of the unit vectors)."""
    eye = torch.eye(n * n, dtype=torch.float64).reshape(n * n, n, n)
    return op(eye).reshape(n * n, -1).T


def _forward_diff(u: torch.Tensor) -> torch.Tensor:
    """Periodic forward differences along both axes, stacked."""
    return torch.stack([torch.roll(u, -1, -1) - u, torch.roll(u, -1, -2) - u], dim=-3)


def test_blur_is_a_symmetric_mean_preserving_convolution():
    n = 8
    op = BlurOperator(n, 1.2).double()
    g = _dense(op, n)
    torch.testing.assert_close(g, g.T)
    torch.testing.assert_close(g.sum(1), torch.ones(n * n, dtype=torch.float64))
    k = torch.arange(n, dtype=torch.float64)
    k = torch.minimum(k, n - k)
    kernel = torch.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / (2 * 1.2**2))
    torch.testing.assert_close(g[:, 0].reshape(n, n), kernel / kernel.sum())


def test_tikhonov_fourier_formula_solves_the_normal_equations():
    n, alpha = 8, 0.03
    op = BlurOperator(n, 1.5).double()
    tik = Tikhonov(op, alpha).double()
    g = _dense(op, n)
    d = _dense(_forward_diff, n)  # [2 n^2, n^2]
    y = torch.randn(3, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lhs = g.T @ g + alpha * d.T @ d
    dense = torch.linalg.solve(lhs, (g.T @ y.reshape(3, -1).T)).T.reshape(3, n, n)
    torch.testing.assert_close(tik(y), dense)
    torch.testing.assert_close(torch.diag(d.T @ d).sum(), gradient_symbol(n).double().sum())


def test_psnr_and_alpha_tuning():
    ref = torch.zeros(2, 4, 4)
    torch.testing.assert_close(psnr(ref + 0.1, ref), torch.full((2,), 20.0))
    u = make_phantoms(32, 16, seed=0)
    assert u.min() >= 0 and u.max() <= 1 and (u > 0).float().mean() > 0.1
    op = BlurOperator(16, 1.5)
    y = op(u) + 0.02 * torch.randn(u.shape, generator=torch.Generator().manual_seed(1))
    best = tune_alpha(op, y, u)
    score = lambda a: float(psnr(Tikhonov(op, a)(y), u).mean())  # noqa: E731
    assert score(best) >= max(score(1e-5), score(1.0))
    assert score(best) > float(psnr(y, u).mean())  # better than no inversion


def test_loss_terms_match_their_definitions():
    n, noise = 16, 0.05
    op = BlurOperator(n, 1.5)
    tik = Tikhonov(op, 0.01)
    model = PostProcessed(tik, UNet(1, 1, base=4, depth=1))  # head starts at zero: Psi = T
    y = torch.randn(512, n, n, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = model(y)
        torch.testing.assert_close(x, tik(y))
        mc = inverse_loss(model, y, x, op, mc_weight=1.0, jacobian_weight=0.0, noise=noise)
        torch.testing.assert_close(mc, torch.mean((y - op(x)) ** 2))
        torch.manual_seed(0)
        jac = inverse_loss(model, y, x, op, mc_weight=0.0, jacobian_weight=1.0, noise=noise)
    # Psi = T is linear and circulant: ||J||_F^2 / n_pix = mean(filter^2)
    expected = float(torch.mean(tik.filter**2))
    assert abs(float(jac) - expected) < 0.05 * expected


def _train(task, y, u, steps=40):
    """Full-batch Adam on the task's loss."""
    opt = torch.optim.Adam(task.model.parameters(), 1e-2)
    for _ in range(steps):
        opt.zero_grad()
        task.loss(task.model, (y, u)).backward()
        opt.step()


def test_inverse_tiny_config_trains():
    cfg = InverseConfig(size=16, n_train=16, n_val=8, base=4, depth=1, mc_weight=0.1,
                        jacobian_weight=1e-3)
    torch.manual_seed(0)
    task = get_workload("inverse").build(cfg, BuildContext(seed=0))
    y, u = task.train_data.tensors
    with torch.no_grad():
        first = float(torch.mean((task.model(y) - u) ** 2))
    _train(task, y, u)
    with torch.no_grad():
        assert float(torch.mean((task.model(y) - u) ** 2)) < 0.9 * first
        ev = task.evaluate(task.model.eval(), task.val_data)
    assert {"psnr", "tikhonov_psnr", "gain_db"} <= set(ev)
    assert all(math.isfinite(v) for v in ev.values())


def test_learned_inverse_starts_at_the_data_and_trains():
    """``input=data``: no Tikhonov step, Psi(y) = y + U(y) starts exactly at y and learns."""
    cfg = InverseConfig(size=16, n_train=16, n_val=8, base=4, depth=1, mc_weight=1.0, input="data")
    torch.manual_seed(0)
    task = get_workload("inverse").build(cfg, BuildContext(seed=0))
    y, u = task.train_data.tensors
    with torch.no_grad():
        assert torch.equal(task.model(y), y)
        first = float(torch.mean((task.model(y) - u) ** 2))
    assert not any(isinstance(m, Tikhonov) for m in task.model.modules())
    _train(task, y, u)
    with torch.no_grad():
        assert float(torch.mean((task.model(y) - u) ** 2)) < 0.9 * first
