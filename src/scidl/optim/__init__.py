"""Optimizers (registry by name) and learning-rate schedules."""

from scidl.optim.config import OptimConfig
from scidl.optim.registry import build_optimizer, optimizer_names, register_optimizer
from scidl.optim.schedules import build_scheduler, lr_factor_fn

__all__ = [
    "OptimConfig",
    "build_optimizer",
    "build_scheduler",
    "lr_factor_fn",
    "optimizer_names",
    "register_optimizer",
]
