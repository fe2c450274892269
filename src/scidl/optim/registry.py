"""Optimizer registry: ``optim.name`` → a factory ``(params, cfg) -> torch.optim.Optimizer``."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from scidl.optim.config import OptimConfig

# Default denominator epsilons when ``optim.eps`` is unset (None).
ADAM_EPS = 1e-8  # torch.optim.Adam/AdamW, LARS/LARC guard
LAMB_EPS = 1e-6  # LAMB paper (You et al. 2019), timm, NVIDIA apex

OptimFactory = Callable[[Iterable[Any], OptimConfig], torch.optim.Optimizer]
_REGISTRY: dict[str, OptimFactory] = {}


def register_optimizer(name: str) -> Callable[[OptimFactory], OptimFactory]:
    """Decorator: register ``factory(params, cfg)`` under ``name``."""

    def deco(fn: OptimFactory) -> OptimFactory:
        _REGISTRY[name] = fn
        return fn

    return deco


@register_optimizer("sgd")
def _sgd(params: Iterable[Any], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@register_optimizer("adam")
def _adam(params: Iterable[Any], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps_or(ADAM_EPS), weight_decay=cfg.weight_decay
    )


@register_optimizer("adamw")
def _adamw(params: Iterable[Any], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps_or(ADAM_EPS), weight_decay=cfg.weight_decay
    )


def _load_extras() -> None:
    """Import optimizer modules that register themselves (kept lazy: no import-time work)."""
    import importlib

    for mod in _EXTRA_MODULES:
        importlib.import_module(mod)


# Modules whose import registers more optimizers (one line per file).
_EXTRA_MODULES: list[str] = ["scidl.optim.lars", "scidl.optim.lamb", "scidl.optim.anderson"]


def optimizer_names() -> list[str]:
    _load_extras()
    return sorted(_REGISTRY)


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Build the configured optimizer over ``model``'s trainable parameters."""
    _load_extras()
    if cfg.name not in _REGISTRY:
        close = difflib.get_close_matches(cfg.name, list(_REGISTRY), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise KeyError(f"unknown optim.name {cfg.name!r}{hint}; choices: {', '.join(sorted(_REGISTRY))}")
    params = [p for p in model.parameters() if p.requires_grad]
    return _REGISTRY[cfg.name](params, cfg)
