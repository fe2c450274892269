"""LARS and LARC: layer-wise adaptive rate scaling (You, Gitman, Ginsburg 2017, arXiv 1708.03888).

For each parameter tensor w with gradient g (one "layer"), the local rate is

    lambda = eta * ||w|| / (||g|| + beta * ||w|| + eps)

with trust coefficient eta and weight decay beta. LARS scales the global rate by it,
LARC (NVIDIA apex) clips instead, using min(lambda, lr) as the layer's rate:

    v <- mu * v + r * (g + beta * w),   w <- w - v,
    r = lr * lambda (LARS)   or   r = min(lambda, lr) (LARC, ``clip=True``).

When ||w|| or ||g|| is zero the ratio is 1 (the layer moves with the global rate).
1-D parameters (biases, norm scales) are excluded from weight decay and from the trust
ratio when ``exclude_1d`` is set (the default): they take a plain momentum-SGD step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from scidl.optim.config import OptimConfig
from scidl.optim.registry import ADAM_EPS


def trust_ratio(
    w_norm: torch.Tensor, g_norm: torch.Tensor, eta: float, weight_decay: float, eps: float
) -> torch.Tensor:
    """eta*||w|| / (||g|| + wd*||w|| + eps), or 1 where either norm is zero."""
    ratio = eta * w_norm / (g_norm + weight_decay * w_norm + eps)
    one = torch.ones_like(ratio)
    return torch.where((w_norm > 0) & (g_norm > 0), ratio, one)


class LARS(torch.optim.Optimizer):
    """Momentum SGD with a layer-wise trust ratio (LARS), or its clipped variant (LARC).

    Args:
        params: parameters or parameter groups.
        lr: global learning rate.
        momentum: momentum mu.
        weight_decay: weight decay beta (added to the gradient, inside the trust ratio).
        trust_coefficient: eta (1e-3 in the LARS paper; apex LARC uses 0.02).
        eps: guard in the denominator of the trust ratio.
        clip: LARC mode: the layer rate is min(lambda, lr) rather than lr*lambda.
        exclude_1d: 1-D tensors get neither weight decay nor trust ratio.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 1e-3,
        eps: float = ADAM_EPS,
        clip: bool = False,
        exclude_1d: bool = True,
    ) -> None:
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError("LARS needs lr > 0, 0 <= momentum < 1, weight_decay >= 0, eta > 0")
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay,
            trust_coefficient=trust_coefficient, eps=eps, clip=clip, exclude_1d=exclude_1d,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One LARS/LARC step (see the module docstring for the update)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                self._update(p, group, lr, mu)
        return loss

    def _update(self, p: torch.Tensor, group: dict[str, Any], lr: float, mu: float) -> None:
        g = p.grad
        assert g is not None
        excluded = group["exclude_1d"] and p.ndim <= 1
        wd = 0.0 if excluded else group["weight_decay"]
        if excluded:
            rate: torch.Tensor | float = lr
        else:
            local = trust_ratio(
                p.norm(), g.norm(), group["trust_coefficient"], wd, group["eps"]
            )
            rate = torch.clamp(local, max=lr) if group["clip"] else lr * local
        d = g.add(p, alpha=wd) if wd else g.clone()
        d.mul_(rate)
        state = self.state[p]
        if mu > 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d
            else:
                buf.mul_(mu).add_(d)
            d = buf
        p.sub_(d)


def lars_from_config(params: Iterable[Any], cfg: OptimConfig) -> torch.optim.Optimizer:
    return LARS(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
        trust_coefficient=cfg.trust_coefficient, eps=cfg.eps_or(ADAM_EPS), clip=cfg.clip,
        exclude_1d=cfg.exclude_1d,
    )


def larc_from_config(params: Iterable[Any], cfg: OptimConfig) -> torch.optim.Optimizer:
    return LARS(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
        trust_coefficient=cfg.trust_coefficient, eps=cfg.eps_or(ADAM_EPS), clip=True,
        exclude_1d=cfg.exclude_1d,
    )
