"""Optimizer registry: ``optim.name`` → a factory ``(params, cfg) -> torch.optim.Optimizer``.

Built-in factories are imported on first use; installed packages add optimizers through
the entry-point group ``scidl.optim`` (``name = "package.module:factory"``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from scidl.optim.config import OptimConfig
from scidl.registry import Registry

# Default denominator epsilons when ``optim.eps`` is unset (None).
ADAM_EPS = 1e-8  # torch.optim.Adam/AdamW, LARS/LARC guard
LAMB_EPS = 1e-6  # LAMB paper (You et al. 2019), timm, NVIDIA apex

OptimFactory = Callable[[Iterable[Any], OptimConfig], torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimFactory] = Registry("optim.name", {
    "sgd": "scidl.optim.registry:sgd_from_config",
    "adam": "scidl.optim.registry:adam_from_config",
    "adamw": "scidl.optim.registry:adamw_from_config",
    "lars": "scidl.optim.lars:lars_from_config",
    "larc": "scidl.optim.lars:larc_from_config",
    "lamb": "scidl.optim.lamb:lamb_from_config",
    "anderson": "scidl.optim.anderson:anderson_from_config",
    "lbfgs": "scidl.optim.registry:lbfgs_from_config",
}, group="scidl.optim")


def register_optimizer(name: str) -> Callable[[OptimFactory], OptimFactory]:
    """Decorator: register ``factory(params, cfg)`` under ``name``."""
    return OPTIMIZERS.register(name)


def sgd_from_config(params: Iterable[Any], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def adam_from_config(params: Iterable[Any], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps_or(ADAM_EPS), weight_decay=cfg.weight_decay
    )


def adamw_from_config(params: Iterable[Any], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps_or(ADAM_EPS), weight_decay=cfg.weight_decay
    )


def lbfgs_from_config(params: Iterable[Any], cfg: OptimConfig) -> torch.optim.Optimizer:
    """``torch.optim.LBFGS``: the trainer passes a closure returning the rank-averaged loss
    (gradients averaged by DDP), so every rank takes the same line-search decisions."""
    return torch.optim.LBFGS(
        params, lr=cfg.lr, max_iter=cfg.lbfgs_max_iter, history_size=cfg.lbfgs_history,
        tolerance_grad=cfg.lbfgs_tolerance_grad, tolerance_change=cfg.lbfgs_tolerance_change,
        line_search_fn=None if cfg.lbfgs_line_search == "none" else cfg.lbfgs_line_search,
    )


def optimizer_names() -> list[str]:
    """Every registered optimizer name, sorted."""
    return OPTIMIZERS.names()


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Build the configured optimizer over ``model``'s trainable parameters."""
    factory = OPTIMIZERS.get(cfg.name)
    params = [p for p in model.parameters() if p.requires_grad]
    return factory(params, cfg)
