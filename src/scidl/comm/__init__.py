"""Gradient communication strategies, one file each, chosen by name (``comm.strategy``)."""

from scidl.comm.accounting import CommCounters
from scidl.comm.base import CommStrategy
from scidl.comm.config import CommConfig
from scidl.comm.registry import (
    build_strategy,
    get_strategy_class,
    register_strategy,
    strategy_names,
)

__all__ = [
    "CommConfig",
    "CommCounters",
    "CommStrategy",
    "build_strategy",
    "get_strategy_class",
    "register_strategy",
    "strategy_names",
]
