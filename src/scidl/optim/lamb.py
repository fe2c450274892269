"""LAMB: layer-wise adaptive moments (You et al. 2019, arXiv 1904.00962, Algorithm 2).

Per parameter tensor x with gradient g, at step t:

    m <- b1*m + (1-b1)*g,   v <- b2*v + (1-b2)*g^2,
    r = (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps),
    x <- x - lr * ||x|| / ||r + wd*x|| * (r + wd*x)

with the ratio set to 1 where ||x|| or ||r + wd*x|| is zero (phi = identity). 1-D
parameters are excluded from weight decay and trust ratio when ``exclude_1d`` is set
(the default): they take a plain Adam step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from scidl.optim.config import OptimConfig
from scidl.optim.registry import LAMB_EPS


class LAMB(torch.optim.Optimizer):
    """Adam direction with a per-layer trust ratio ||x|| / ||r + wd*x||.

    Args:
        params: parameters or parameter groups.
        lr: global learning rate.
        betas: (b1, b2) moment decay rates.
        eps: denominator epsilon.
        weight_decay: decoupled weight decay wd (inside the trust ratio).
        exclude_1d: 1-D tensors get neither weight decay nor trust ratio.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = LAMB_EPS,
        weight_decay: float = 0.0,
        exclude_1d: bool = True,
    ) -> None:
        if lr <= 0 or not all(0 <= b < 1 for b in betas) or weight_decay < 0:
            raise ValueError("LAMB needs lr > 0, 0 <= betas < 1, weight_decay >= 0")
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, exclude_1d=exclude_1d
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One LAMB step (see the module docstring for the update)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        b1, b2 = group["betas"]
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        t = int(state["step"].item())
        g = p.grad
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v / (1 - b2**t)).sqrt_().add_(group["eps"])
        r = (m / (1 - b1**t)).div_(denom)
        excluded = group["exclude_1d"] and p.ndim <= 1
        if excluded:
            p.sub_(r, alpha=group["lr"])
            return
        if group["weight_decay"]:
            r.add_(p, alpha=group["weight_decay"])
        w_norm, r_norm = p.norm(), r.norm()
        ratio = torch.where(
            (w_norm > 0) & (r_norm > 0), w_norm / r_norm.clamp_min(math.ulp(0.0)),
            torch.ones_like(w_norm),
        )
        p.sub_(r * (group["lr"] * ratio))


def lamb_from_config(params: Iterable[Any], cfg: OptimConfig) -> torch.optim.Optimizer:
    return LAMB(
        params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps_or(LAMB_EPS), weight_decay=cfg.weight_decay,
        exclude_1d=cfg.exclude_1d,
    )
