"""Learning-rate schedules as multiplicative factors of the peak rate (LambdaLR).

The factor at optimizer step t is ``scale * warmup(t) * decay(t - warmup_steps)``:

- linear scaling rule (Goyal et al. 2017): ``scale = global_batch / reference_batch``
  when ``optim.reference_batch`` is set and the caller passes the global batch;
- gradual warm-up: linear from ``warmup_start_factor`` to 1 over ``warmup_steps``;
- decay over the remaining T steps: ``constant``; ``cosine`` 0.5*(1+cos(pi*t/T));
  ``poly`` (1 - t/T)^p (LARS paper, p = 2); ``cyclic``: ``cycles`` cosine cycles of
  length ceil(T/cycles), restarting at 1 (snapshot ensembles, Huang et al. 2017).
  Decaying schedules never go below ``min_lr_factor``.
"""

from __future__ import annotations

import math
import warnings
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


def poly_factor(step: int, total: int, power: float, floor: float) -> float:
    """Polynomial decay (1 - t/T)^p from 1 to ``floor``."""
    if total <= 0:
        return 1.0
    t = min(max(step, 0), total) / total
    return floor + (1.0 - floor) * (1.0 - t) ** power


def cycle_length(total: int, cycles: int) -> int:
    """Steps per cycle of the cyclic schedule: ceil(total / cycles)."""
    return max(math.ceil(total / max(cycles, 1)), 1)


def cyclic_factor(step: int, total: int, cycles: int, floor: float) -> float:
    """Cosine annealing restarted ``cycles`` times: 1 → floor within each cycle."""
    length = cycle_length(total, cycles)
    s = max(step, 0) % length
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * s / length))


def cycle_end_steps(cfg: OptimConfig, total_steps: int) -> list[int]:
    """Optimizer-step counts after which a cycle of the cyclic schedule ends (snapshot points).

    With ``schedule != "cyclic"`` the only cycle ends at ``total_steps``.
    """
    decay = max(total_steps - cfg.warmup_steps, 1)
    if cfg.schedule != "cyclic":
        return [total_steps]
    length = cycle_length(decay, cfg.cycles)
    ends = [min(cfg.warmup_steps + length * (c + 1), total_steps) for c in range(cfg.cycles)]
    return sorted(set(ends))


def batch_scale(cfg: OptimConfig, global_batch: int | None) -> float:
    """Linear scaling rule factor global_batch / reference_batch (1 if either is unset)."""
    if cfg.reference_batch is None or global_batch is None:
        return 1.0
    return global_batch / cfg.reference_batch


def lr_factor_fn(
    cfg: OptimConfig, total_steps: int, global_batch: int | None = None
) -> Callable[[int], float]:
    """The schedule as a function ``step -> factor`` (scaling rule × warm-up × decay).

    Its attribute ``constant_from`` is the first step from which the factor no longer
    changes (the end of the warm-up for ``constant``), None for decaying schedules: a
    scheduler step past it need not evaluate the factor (``step_schedule``)."""
    decay_steps = max(total_steps - cfg.warmup_steps, 1)
    scale = batch_scale(cfg, global_batch)
    floor = cfg.min_lr_factor

    def decay(s: int) -> float:
        if cfg.schedule == "cosine":
            return cosine_factor(s, decay_steps, floor)
        if cfg.schedule == "poly":
            return poly_factor(s, decay_steps, cfg.poly_power, floor)
        if cfg.schedule == "cyclic":
            return cyclic_factor(s, decay_steps, cfg.cycles, floor)
        return 1.0

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return scale * warmup_factor(step, cfg.warmup_steps, cfg.warmup_start_factor)
        return scale * decay(step - cfg.warmup_steps)

    # the first step from which the factor stops changing (None: it decays to the end);
    # a function attribute, not a callable object: LambdaLR saves an object's attributes
    # in its state dict, and so in every checkpoint
    setattr(factor, "constant_from",  # noqa: B010
            None if cfg.schedule in ("cosine", "poly", "cyclic") else max(cfg.warmup_steps, 0))
    return factor


def warmup_budget_message(cfg: OptimConfig, total_steps: int) -> str | None:
    """A warning when warm-up takes at least half of the run's optimizer steps, else None.

    Such a run spends most of its budget at a fraction of the peak rate (or never reaches it)
    and can end near chance with no other sign.
    """
    if cfg.warmup_steps <= 0 or 2 * cfg.warmup_steps < total_steps:
        return None
    share = "all" if cfg.warmup_steps >= total_steps else "at least half"
    return (f"optim.warmup_steps={cfg.warmup_steps} is {share} of the run's {total_steps} "
            "optimizer steps: the learning rate stays below its peak for most of the run; "
            "lower optim.warmup_steps or train longer")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: OptimConfig,
    total_steps: int,
    global_batch: int | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepping once per optimizer step.

    Args:
        optimizer: the optimizer whose groups' ``lr`` is scheduled.
        cfg: the optimizer section (schedule, warm-up, scaling rule).
        total_steps: optimizer steps in the run.
        global_batch: samples per optimizer step over all ranks
            (batch_size × grad_accum × world); enables the linear scaling rule when
            ``cfg.reference_batch`` is set.

    Warns when the warm-up is at least half of ``total_steps`` (``warmup_budget_message``).
    """
    if cfg.reference_batch is not None and global_batch is None:
        warnings.warn(
            "optim.reference_batch is set but the global batch size was not passed to "
            "build_scheduler: the linear scaling rule is not applied", stacklevel=2)
    message = warmup_budget_message(cfg, total_steps)
    if message is not None:
        warnings.warn(message, stacklevel=2)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor_fn(cfg, total_steps, global_batch)
    )
