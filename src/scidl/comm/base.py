"""The communication-strategy contract and its registry."""

from __future__ import annotations

import difflib
import importlib
from typing import Any, ClassVar

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from scidl.comm.accounting import CommCounters
from scidl.comm.config import CommConfig


class CommStrategy:
    """How one rank's gradients are combined with the others'.

    Lifecycle: the trainer builds the strategy from the ``comm`` config, asks it for
    ``ddp_kwargs()`` when wrapping the model in DDP, calls ``install(ddp_model, group)``
    once (call on all ranks), and ``end_step()`` after each optimizer step. Strategies
    must issue their collectives in the same order on every rank and backend.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, cfg: CommConfig) -> None:
        self.cfg = cfg
        self.counters = CommCounters()

    def ddp_kwargs(self) -> dict[str, Any]:
        return {"bucket_cap_mb": self.cfg.bucket_cap_mb}

    def install(self, ddp_model: DDP, group: dist.ProcessGroup | None = None) -> None:
        """Attach to the DDP model (register a communication hook, or nothing)."""

    def end_step(self) -> dict[str, float]:
        """Close the step's accounting and return its counters (bytes, seconds)."""
        return self.counters.end_step()

    def report(self) -> dict[str, Any]:
        """Totals for ``comm.json``."""
        return {"strategy": self.name, **self.counters.summary()}


_BUILTIN: dict[str, str] = {
    "dense": "scidl.comm.dense:DenseAllreduce",
}
_EXTRA: dict[str, type[CommStrategy]] = {}


def register_strategy(cls: type[CommStrategy]) -> type[CommStrategy]:
    _EXTRA[cls.name] = cls
    return cls


def strategy_names() -> list[str]:
    return sorted({*_BUILTIN, *_EXTRA})


def get_strategy_class(name: str) -> type[CommStrategy]:
    if name in _EXTRA:
        return _EXTRA[name]
    if name not in _BUILTIN:
        close = difflib.get_close_matches(name, strategy_names(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise KeyError(f"unknown comm.strategy {name!r}{hint}; choices: {', '.join(strategy_names())}")
    module, _, attr = _BUILTIN[name].partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


def build_strategy(cfg: CommConfig) -> CommStrategy:
    """Instantiate the configured strategy."""
    return get_strategy_class(cfg.strategy)(cfg)
