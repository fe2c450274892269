"""Learning-rate schedules as multiplicative factors of the peak rate (LambdaLR)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from scidl.optim.config import OptimConfig


def warmup_factor(step: int, warmup_steps: int, start: float) -> float:
    """Linear warm-up from ``start`` to 1 over ``warmup_steps`` (Goyal et al. 2017)."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return start + (1.0 - start) * step / warmup_steps


def cosine_factor(step: int, total: int, floor: float) -> float:
    """Half-cosine decay from 1 to ``floor`` over ``total`` steps."""
    if total <= 0:
        return 1.0
    t = min(max(step, 0), total) / total
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def lr_factor_fn(cfg: OptimConfig, total_steps: int) -> Callable[[int], float]:
    """The schedule as a function ``step -> factor`` (warm-up, then the decay)."""
    decay_steps = max(total_steps - cfg.warmup_steps, 1)

    def factor(step: int) -> float:
        w = warmup_factor(step, cfg.warmup_steps, cfg.warmup_start_factor)
        if step < cfg.warmup_steps:
            return w
        s = step - cfg.warmup_steps
        if cfg.schedule == "cosine":
            return cosine_factor(s, decay_steps, cfg.min_lr_factor)
        return 1.0

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepping once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor_fn(cfg, total_steps))
