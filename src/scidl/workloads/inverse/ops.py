"""Synthetic phantoms, a known blur forward model and its Tikhonov inverse.

Forward model (periodic Gaussian blur of width ``sigma`` pixels plus white noise)::

    y = G u + e,   G u = F^-1( H . F u ),   H = F k_sigma,   e ~ N(0, s^2 I)

Tikhonov inverse with a first-difference (gradient) regulariser, solved exactly in
Fourier space because every operator is a circulant::

    u_alpha = argmin ||G u - y||^2 + alpha ||D u||^2
            = F^-1( conj(H) . F y / (|H|^2 + alpha |D|^2) ),
    |D|^2 = 4 sin^2(pi k_x / n) + 4 sin^2(pi k_y / n)
"""

from __future__ import annotations

import math

import torch
from torch import nn


def make_phantoms(n_images: int, size: int, seed: int, max_shapes: int = 6) -> torch.Tensor:
    """Piecewise-constant images ``[N, size, size]`` in [0, 1]: painted ellipses and rectangles.

    Each image holds 2..``max_shapes`` shapes with random centre, semi-axes, rotation and
    grey value (later shapes cover earlier ones). Depends only on ``seed``.
    """
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    coords = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    img = torch.zeros(n_images, size, size)
    n_shapes = torch.randint(2, max_shapes + 1, (n_images,), generator=g)
    for k in range(max_shapes):
        cx, cy = (r(n_images) - 0.5) * 1.4, (r(n_images) - 0.5) * 1.4
        a, b = 0.1 + 0.4 * r(n_images), 0.1 + 0.4 * r(n_images)
        th = math.pi * r(n_images)
        value = 0.2 + 0.8 * r(n_images)
        is_rect = r(n_images) < 0.5
        dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
        c, s = torch.cos(th)[:, None, None], torch.sin(th)[:, None, None]
        xr, yr = (c * dx + s * dy) / a[:, None, None], (-s * dx + c * dy) / b[:, None, None]
        ellipse = xr**2 + yr**2 <= 1
        rect = (xr.abs() <= 1) & (yr.abs() <= 1)
        inside = torch.where(is_rect[:, None, None], rect, ellipse)
        inside &= (k < n_shapes)[:, None, None]
        img = torch.where(inside, value[:, None, None], img)
    return img


def gaussian_symbol(size: int, sigma: float) -> torch.Tensor:
    """Fourier symbol ``H`` (real, ``[size, size]``) of the periodic Gaussian blur."""
    d = torch.arange(size, dtype=torch.float64)
    d = torch.minimum(d, size - d)  # circular distance to pixel 0
    k1 = torch.exp(-(d**2) / (2 * sigma**2))
    kernel = k1[:, None] * k1[None, :]
    kernel /= kernel.sum()
    return torch.fft.fft2(kernel).real.float()


def gradient_symbol(size: int) -> torch.Tensor:
    """``|D|^2`` of the periodic forward-difference gradient, ``[size, size]``."""
    k = torch.arange(size, dtype=torch.float64)
    s = 4 * torch.sin(math.pi * k / size) ** 2
    return (s[:, None] + s[None, :]).float()


class BlurOperator(nn.Module):
    """The forward model ``G`` (periodic Gaussian blur) on images ``[..., n, n]``."""

    symbol: torch.Tensor

    def __init__(self, size: int, sigma: float) -> None:
        super().__init__()
        self.register_buffer("symbol", gaussian_symbol(size, sigma))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.fft.ifft2(torch.fft.fft2(u) * self.symbol).real


class Tikhonov(nn.Module):
    """Closed-form Tikhonov inverse of a :class:`BlurOperator` with a gradient penalty."""

    filter: torch.Tensor

    def __init__(self, op: BlurOperator, alpha: float) -> None:
        super().__init__()
        h = op.symbol
        self.alpha = float(alpha)
        self.register_buffer("filter", h / (h**2 + alpha * gradient_symbol(h.shape[-1])))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.fft.ifft2(torch.fft.fft2(y) * self.filter).real


def psnr(x: torch.Tensor, ref: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB, ``10 log10(peak^2 / mean((x - ref)^2))``, shape ``[N]``."""
    mse = ((x - ref) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(peak**2 / mse)


def tune_alpha(op: BlurOperator, y: torch.Tensor, u: torch.Tensor,
               grid: torch.Tensor | None = None) -> float:
    """The ``alpha`` of the grid (default ``10^[-5, 0]``) with the best mean PSNR on (y, u)."""
    grid = torch.logspace(-5, 0, 26) if grid is None else grid
    scores = [float(psnr(Tikhonov(op, float(a))(y), u).mean()) for a in grid]
    return float(grid[max(range(len(scores)), key=scores.__getitem__)])
