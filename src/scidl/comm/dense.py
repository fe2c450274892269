"""``dense``: one allreduce per DDP bucket, overlapped with the backward pass."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.futures import Future
from torch.nn.parallel import DistributedDataParallel as DDP

from scidl.comm.accounting import ring_allreduce_bytes
from scidl.comm.base import CommStrategy
from scidl.comm.buckets import Bucket
from scidl.comm.sparse_grads import sparse_modules


def ddp_bucket_bytes(ddp_model: DDP) -> list[int]:
    """Sizes in bytes of ``ddp_model``'s gradient buckets (after DDP's rebuild, if done)."""
    data = ddp_model._get_ddp_logging_data()
    sizes = data.get("rebuilt_bucket_sizes") or data.get("bucket_sizes") or ""
    return [int(b) for b in str(sizes).split(",") if b.strip()]


class DenseAllreduce(CommStrategy):
    """Average gradients with one ring allreduce per DDP bucket (``bucket_cap_mb``).

    ḡ = (1/p)·Σ_r g_r; each rank sends and receives 2(p-1)/p·n·4 bytes per bucket of n
    fp32 entries. The division happens before the sum (same as DDP's default hook).
    Sparse gradients (``nn.Embedding(sparse=True)``) use the backend's sparse allreduce,
    as DDP does without a hook, and stay sparse.

    Without ``comm.timing`` and without sparse gradients no Python hook is installed:
    DDP reduces with its built-in C++ allreduce, and the bytes are counted from its
    buckets, once per backward pass that synchronises gradients (counted at the DDP
    forward that prepares it). ``comm_s``/``exposed_s`` are then not measured.
    """

    name = "dense"
    description = "bucketed dense allreduce (DDP), bucket size configurable"
    nonfinite_agreed = True
    native_sparse = True

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.builtin: DDP | None = None  # the model DDP reduces without a Python hook
        self._syncs = 0  # synchronising backward passes prepared this step
        self._buckets: list[int] = []  # [allreduce calls, bytes sent] per synchronisation
        self._pre_hook: Any = None  # counts synchronising forwards (unless the caller counts)
        self._caller_counts = False

    def wrap(self, module: nn.Module, group: dist.ProcessGroup | None = None,
             **ddp_kwargs: Any) -> DDP:
        """As :meth:`CommStrategy.wrap`; on the built-in path the gradients are views of
        DDP's buckets (``gradient_as_bucket_view``: no copy between the two)."""
        if not (self.cfg.timing or _has_sparse(module)):
            ddp_kwargs = {"gradient_as_bucket_view": True, **ddp_kwargs}
        return super().wrap(module, group, **ddp_kwargs)

    def attach(self, ddp_model: DDP) -> None:
        if self.cfg.timing or _has_sparse(ddp_model.module):
            self.builtin = None
            super().attach(ddp_model)
            return
        self.builtin = ddp_model
        self._buckets = []
        if not self._caller_counts:  # a hook makes every DDP call take torch's slow path
            self._pre_hook = ddp_model.register_forward_pre_hook(self._count_sync)

    def caller_counts_syncs(self) -> None:
        self._caller_counts = True
        if self._pre_hook is not None:
            self._pre_hook.remove()
            self._pre_hook = None

    def _count_sync(self, module: nn.Module, args: Any) -> None:
        """DDP prepares a gradient reduction at every forward with grad on and no ``no_sync``."""
        if torch.is_grad_enabled() and module.require_backward_grad_sync:
            self._syncs += 1

    def count_sync(self) -> None:
        if self.builtin is not None:
            self._syncs += 1

    def reduce(self, bucket: Bucket) -> Future[torch.Tensor]:
        buf = bucket.buffer
        buf.div_(self.world)
        return self.allreduce(buf)

    def end_step(self) -> dict[str, float]:
        if self.builtin is None:
            return super().end_step()
        # counted, not timed (no hook, nothing in flight): one lock for the whole step
        self.step += 1
        syncs, self._syncs = self._syncs, 0
        if syncs and (self.step < 4 or not self._buckets):  # DDP rebuilds its buckets after step 1
            sizes = ddp_bucket_bytes(self.builtin)
            self._buckets = [len(sizes), sum(ring_allreduce_bytes(b, self.world, self.backend)
                                             for b in sizes)]
        calls, sent = self._buckets if syncs else (0, 0)
        return self.counters.close_untimed_step("allreduce", sent * syncs, sent * syncs, calls * syncs)

    def report(self) -> dict[str, Any]:
        out = super().report()
        out["timed"] = self.builtin is None
        if self.builtin is not None:  # not measured without the hook
            out["comm_s"] = out["comm_s_per_step"] = None
            out["exposed_s"] = out["exposed_s_per_step"] = None
        return out


def _has_sparse(module: nn.Module) -> bool:
    return bool(sparse_modules(module))
