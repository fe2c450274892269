"""``lag``: apply step t's reduced gradient at step t+1 (Kurth et al. SC18).

The hook copies the local gradient of a bucket, hands the copy to the inner strategy
(``comm.lag_inner``: any other strategy) and returns the result the inner strategy
produced for the same bucket one step earlier. The reduction therefore overlaps the
whole next forward/backward pass instead of only the rest of the backward pass:

    update at step t+1 uses ḡ_t = reduce(g_t)     (step 0 applies a zero gradient)

Exposed communication is only the wait for step t's result at step t+1, if any.
The lagged result is re-mapped per parameter if DDP rebuilds its buckets.
A rank whose gradient is NaN/Inf returns it at once (the trainer skips the step on every
rank); a skipped step drops the lagged results, so the next step applies zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.futures import Future
from torch.nn.parallel import DistributedDataParallel as DDP

from scidl.comm.base import CommStrategy, completed
from scidl.comm.buckets import Bucket, Layout
from scidl.comm.registry import build_strategy, get_strategy_class
from scidl.comm.wire import Collective, Shape


def inner_of(cfg: Any) -> tuple[type[CommStrategy], Any]:
    """The inner strategy's class and its config (``comm.lag_inner``)."""
    inner = cfg.model_copy(update={"strategy": cfg.lag_inner})
    return get_strategy_class(cfg.lag_inner), inner


class Lag(CommStrategy):
    """One-step gradient lag around an inner strategy."""

    name = "lag"
    description = "one-step gradient lag wrapping any other strategy (comm.lag_inner)"
    wire_settings = ("lag_inner",)
    lagged = True

    @classmethod
    def wire(cls, cfg: Any, numel: int, world: int,
             shapes: Sequence[Shape] | None = None) -> list[Collective]:
        """The inner strategy's collectives (one step later)."""
        inner_cls, inner = inner_of(cfg)
        return inner_cls.wire(inner, numel, world, shapes)

    @classmethod
    def wire_bytes(cls, cfg: Any, numel: int, world: int,
                   shapes: Sequence[Shape] | None = None, backend: str | None = None) -> float:
        inner_cls, inner = inner_of(cfg)
        return inner_cls.wire_bytes(inner, numel, world, shapes, backend)

    @classmethod
    def allreduce_algorithm(cls, cfg: Any) -> str | None:
        inner_cls, inner = inner_of(cfg)
        return inner_cls.allreduce_algorithm(inner)

    @classmethod
    def fusion_bytes(cls, cfg: Any) -> float | None:
        inner_cls, inner = inner_of(cfg)
        return inner_cls.fusion_bytes(inner)

    @classmethod
    def spec_settings(cls, cfg: Any) -> tuple[str, ...]:
        inner_cls, inner = inner_of(cfg)
        return (*cls.wire_settings, *inner_cls.spec_settings(inner))

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.inner = build_strategy(cfg.model_copy(update={"strategy": cfg.lag_inner}))
        self.inner.counters = self.counters  # one set of books
        self._pending: dict[int, tuple[Future[torch.Tensor], Layout]] = {}
        self._prev: dict[int, tuple[Future[torch.Tensor], Layout]] = {}
        self._pieces: dict[int, torch.Tensor] = {}
        self._snap_step = -1

    def ddp_kwargs(self) -> dict[str, Any]:
        return self.inner.ddp_kwargs()

    def setup(self, ddp_model: DDP | None, group: dist.ProcessGroup | None) -> None:
        super().setup(ddp_model, group)
        self.inner.setup(ddp_model, group)

    def reduce(self, bucket: Bucket) -> Future[torch.Tensor]:
        if self._snap_step != self.step:  # first bucket of a new step
            self._snap_step = self.step
            self._prev, self._pending = self._pending, {}
        buf = bucket.buffer
        fresh = self.inner.reduce(bucket.with_buffer(buf.clone()))
        self._pending[bucket.index] = (fresh, bucket.layout)
        if not bool(torch.isfinite(buf.sum())):
            # This rank's gradient is NaN/Inf: hand it back now, so the trainer skips this
            # step on every rank (instead of applying it one step late).
            return completed(buf)
        prev = self._prev.pop(bucket.index, None)
        if prev is not None and prev[1] == bucket.layout:
            old = self.wait(prev[0])
            if old.numel() == buf.numel():
                return completed(buf.copy_(old))
        if prev is None and not self._prev and not self._pieces:
            return completed(buf.zero_())  # step 0: nothing reduced yet
        # DDP rebuilt its buckets: split every lagged result into per-parameter pieces.
        for fut, lay in [*([prev] if prev else []), *self._prev.values()]:
            flat, start = self.wait(fut), 0
            for pid, n in lay:
                self._pieces[pid] = flat[start : start + n]
                start += n
        self._prev.clear()
        start = 0
        buf.zero_()
        for pid, n in bucket.layout:
            piece = self._pieces.pop(pid, None)
            if piece is not None and piece.numel() == n:
                buf[start : start + n] = piece
            start += n
        return completed(buf)

    def end_step(self) -> dict[str, float]:
        self.inner.step += 1
        return super().end_step()

    def reset_state(self) -> None:
        """Drop the lagged results (the next step applies a zero gradient, as step 0)."""
        for fut, _ in [*self._pending.values(), *self._prev.values()]:
            fut.wait()  # let the inner strategy's callbacks finish before resetting it
        self._pending, self._prev, self._pieces = {}, {}, {}
        self.inner.reset_state()

    def state_dict(self) -> dict[str, Any]:
        """The lagged result still to be applied, per parameter, and the inner state."""
        pieces = dict(self._pieces)
        for fut, lay in [*self._prev.values(), *self._pending.values()]:
            flat, start = fut.wait(), 0
            for pid, n in lay:
                pieces[pid] = flat[start : start + n]
                start += n
        return {"step": self.step, "lagged": self._by_position(pieces),
                "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.inner.load_state_dict(state.get("inner", {}))
        self._pending, self._prev = {}, {}
        self._pieces = self._by_id(state.get("lagged", {}))

    def report(self) -> dict[str, Any]:
        inner = self.inner.report()
        out = super().report()
        out["inner"] = inner.get("strategy")
        out.update({k: v for k, v in inner.items() if k not in out})
        return out
