"""How much of the optimizer's update a gradient compressor keeps.

A compressor with error feedback sends ``C(g + e)`` and keeps the rest ``e``; what the
model feels is the optimizer's update computed from what was sent. For SGD with momentum
the update is the momentum buffer; for Adam it is ``m̂ / (√v̂ + ε)``, which divides every
coordinate by its own scale, so an error the compressor makes in coordinates with small
gradients is magnified. The measure here is the cosine between the update an optimizer
fed the compressed gradients would apply and the one fed the exact gradients, along the
same (exact) training trajectory.

Why the square of that cosine prices a compressor: a step along a direction at angle θ
to the exact one, with its step size chosen for that direction, lowers a smooth loss by
``cos²θ`` of what the exact step would (the descent lemma), which is the contraction
factor δ of a δ-compressor (``‖C(x) − x‖² ≤ (1 − δ)‖x‖²`` for the best scaling of
``C``), and error-feedback methods need about ``1/δ`` as many steps (Karimireddy et al.,
"Error Feedback Fixes SignSGD and other Gradient Compression Schemes", ICML 2019; Stich &
Karimireddy, 2019). Time to accuracy ≈ step time ÷ δ.

Pure functions and small state holders; nothing here communicates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from scidl.comm.powersgd import matrix_shape, orthonormalise

__all__ = ["EFCompressor", "UpdateShadow", "cosine", "powersgd_approx", "topk_approx"]


def powersgd_approx(m: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One power iteration of PowerSGD (Vogels et al. 2019) on the matrix ``m`` with the
    warm start ``q`` (cols × rank): the rank-``r`` approximation ``P Qᵀ`` and the new
    ``Q``. Linear in ``m``, so on the mean of the ranks' matrices it equals what the
    distributed version reduces to."""
    p = orthonormalise(m @ q)
    q_new = m.t() @ p
    return p @ q_new.t(), q_new


def topk_approx(x: torch.Tensor, density: float) -> torch.Tensor:
    """``x`` with all but its ``ceil(density · n)`` largest-magnitude entries zeroed."""
    flat = x.reshape(-1)
    k = max(1, int(-(-density * flat.numel() // 1)))
    out = torch.zeros_like(flat)
    idx = flat.abs().topk(min(k, flat.numel())).indices
    out[idx] = flat[idx]
    return out.view_as(x)


@dataclass
class EFCompressor:
    """A compressor with error feedback over a list of gradient tensors (one model).

    ``kind``: ``powersgd`` (rank ``rank``; tensors that compression would not shrink are
    sent whole, as SciDL's ``powersgd`` does) or ``topk`` (``density`` of each tensor's
    entries). ``compress(grads)`` returns what would be sent for ``grads`` and keeps the
    residual for the next call.
    """

    kind: Literal["powersgd", "topk"]
    rank: int = 4
    density: float = 0.01
    seed: int = 0
    _residual: list[torch.Tensor] = field(default_factory=list)
    _q: dict[int, torch.Tensor] = field(default_factory=dict)

    def compress(self, grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if not self._residual:
            self._residual = [torch.zeros_like(g) for g in grads]
        out = []
        for i, (g, e) in enumerate(zip(grads, self._residual, strict=True)):
            acc = g + e
            sent = self._one(i, acc)
            self._residual[i] = acc - sent
            out.append(sent)
        return out

    def _one(self, i: int, acc: torch.Tensor) -> torch.Tensor:
        if self.kind == "topk":
            return topk_approx(acc, self.density)
        shape = matrix_shape(acc, self.rank)
        if shape is None:
            return acc.clone()
        m = acc.reshape(shape)
        q = self._q.get(i)
        if q is None:
            gen = torch.Generator().manual_seed(self.seed + i)
            q = torch.randn(shape[1], self.rank, generator=gen, dtype=acc.dtype).to(acc.device)
        approx, self._q[i] = powersgd_approx(m, q)
        return approx.view_as(acc)


@dataclass
class UpdateShadow:
    """The update an optimizer would apply when fed a sequence of gradients, without
    applying it: ``sgd`` (heavy-ball momentum ``momentum``; the update is the buffer) or
    ``adam`` (bias-corrected ``m̂ / (√v̂ + eps)``)."""

    kind: Literal["sgd", "adam"]
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    _m: list[torch.Tensor] = field(default_factory=list)
    _v: list[torch.Tensor] = field(default_factory=list)
    _t: int = 0

    def update(self, grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if not self._m:
            self._m = [torch.zeros_like(g) for g in grads]
            self._v = [torch.zeros_like(g) for g in grads] if self.kind == "adam" else []
        self._t += 1
        if self.kind == "sgd":
            for m, g in zip(self._m, grads, strict=True):
                m.mul_(self.momentum).add_(g)
            return [m.clone() for m in self._m]
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self._t, 1 - b2 ** self._t
        out = []
        for m, v, g in zip(self._m, self._v, grads, strict=True):
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            out.append((m / c1) / ((v / c2).sqrt() + self.eps))
        return out


def cosine(a: Iterable[torch.Tensor], b: Iterable[torch.Tensor]) -> float:
    """Cosine between two lists of tensors taken as one vector each (0 if either is 0)."""
    dot = na = nb = 0.0
    for x, y in zip(a, b, strict=True):
        x64, y64 = x.double(), y.double()
        dot += float((x64 * y64).sum())
        na += float((x64 * x64).sum())
        nb += float((y64 * y64).sum())
    return dot / (na * nb) ** 0.5 if na > 0 and nb > 0 else 0.0
