"""The registry of gradient-communication strategies (``comm.strategy`` names).

Imports no strategy (nor torch) until a name is looked up, so :mod:`scidl.comm.config`
validates names through it without importing :mod:`scidl.comm.base`. Installed packages
add strategies through the entry-point group ``scidl.comm``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scidl.registry import Registry

if TYPE_CHECKING:
    from scidl.comm.base import CommStrategy
    from scidl.comm.config import CommConfig

__all__ = ["STRATEGIES", "build_strategy", "get_strategy_class", "register_strategy",
           "strategy_names"]

STRATEGIES: Registry[type[CommStrategy]] = Registry("comm.strategy", {
    "dense": "scidl.comm.dense:DenseAllreduce",
    "grouped": "scidl.comm.grouped:GroupedAllreduce",
    "hierarchical": "scidl.comm.hierarchical:HierarchicalAllreduce",
    "fp16": "scidl.comm.fp16:FP16Allreduce",
    "bf16": "scidl.comm.bf16:BF16Allreduce",
    "quant": "scidl.comm.quant:Quant",
    "powersgd": "scidl.comm.powersgd:PowerSGD",
    "topk": "scidl.comm.topk:TopK",
    "dgc": "scidl.comm.dgc:DGC",
    "topk_adam": "scidl.comm.topk_adam:TopKAdam",
    "lag": "scidl.comm.lag:Lag",
    "auto": "scidl.comm.auto:Auto",
    "torch_fp16": "scidl.comm.torch_hooks:TorchFP16Hook",
    "torch_powersgd": "scidl.comm.torch_hooks:TorchPowerSGDHook",
}, group="scidl.comm")


def register_strategy(cls: type[CommStrategy]) -> type[CommStrategy]:
    """Register a user-defined strategy class under ``cls.name`` (usable as a decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a non-empty `name`")
    return STRATEGIES.register(cls.name, cls)


def strategy_names() -> list[str]:
    """Every registered strategy name, sorted."""
    return STRATEGIES.names()


def get_strategy_class(name: str) -> type[CommStrategy]:
    """The strategy class registered as ``name`` (RegistryError lists the choices)."""
    return STRATEGIES.get(name)


def build_strategy(cfg: CommConfig) -> CommStrategy:
    """Instantiate the configured strategy."""
    return get_strategy_class(cfg.strategy)(cfg)
