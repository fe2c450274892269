"""Data parallelism: every rank holds the whole model inside DDP over the mesh's ``dp`` group.

The communication strategy (``comm.strategy``) is DDP's communication hook, so the
gradients of the last micro-batch of a step are reduced during its backward pass.
"""

from __future__ import annotations

import gc
import sys
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from scidl.parallel.plan import ParallelDims, ParallelPlan
from scidl.train.step_stats import backward_seed

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

    from scidl.comm.base import CommStrategy
    from scidl.config import RunConfig
    from scidl.workloads.base import LossFn, Task

__all__ = ["DataParallelPlan", "apply_ddp"]


def apply_ddp(model: nn.Module, mesh: DeviceMesh, strategy: CommStrategy, *,
              device: torch.device, find_unused: bool) -> DDP:
    """``model`` inside DDP over ``mesh``'s ``dp`` group, ``strategy`` installed (all ranks)."""
    kw: dict[str, Any] = {"device_ids": [device.index]} if device.type == "cuda" else {}
    return strategy.wrap(model, mesh.get_group("dp"), **kw, find_unused_parameters=find_unused)


class DataParallelPlan(ParallelPlan):
    """Replicas of the whole model; ``grad_accum`` micro-batches per step (DDP ``no_sync``
    on all but the last).

    ``find_unused_parameters=auto`` is settled after the first backward: if some parameter
    got no gradient on any rank, the model is re-wrapped with DDP's search on and the
    micro-batches are run again (see :meth:`_resolve_unused`).
    """

    wrapped: DDP
    carries_nonfinite = True  # a NaN/Inf loss seeds NaN gradients (see :meth:`_accumulate`)

    def __init__(self, dims: ParallelDims, mesh: DeviceMesh, model: nn.Module, ddp: DDP,
                 device: torch.device, precision: str, loss: LossFn, strategy: CommStrategy,
                 find_unused: bool | Literal["auto"], seed_nonfinite: bool = True) -> None:
        super().__init__(dims, mesh, model, ddp, device, precision)
        self.loss, self.strategy, self._find_unused = loss, strategy, find_unused
        strategy.caller_counts_syncs()  # _accumulate counts the reducing backward passes
        self.seed_nonfinite = seed_nonfinite
        self.mixed = precision == "bf16"  # only then does the forward run under autocast

    @classmethod
    def build(cls, cfg: RunConfig, task: Task, dims: ParallelDims, mesh: DeviceMesh,
              device: torch.device, strategy: CommStrategy) -> DataParallelPlan:
        model = task.model.to(device)
        find = cfg.parallel.find_unused_parameters
        ddp = apply_ddp(model, mesh, strategy, device=device, find_unused=find is True)
        return cls(dims, mesh, model, ddp, device, cfg.train.precision, task.loss, strategy, find,
                   seed_nonfinite=cfg.train.skip_nonfinite)

    def forward_backward(self, micro: list[Any]) -> torch.Tensor:
        loss = self._accumulate(micro)
        if self._find_unused == "auto" and self._resolve_unused():
            self.model.zero_grad(set_to_none=True)
            loss = self._accumulate(micro)
        return loss

    def _accumulate(self, micro: list[Any]) -> torch.Tensor:
        n = len(micro)
        total: torch.Tensor | None = None
        for i, batch in enumerate(micro):
            if i == n - 1:  # the last micro-batch's backward reduces the gradients
                self.strategy.count_sync()
                part = self._backward(batch, n)
            else:
                with self.wrapped.no_sync():
                    part = self._backward(batch, n)
            total = part if total is None else total + part
        assert total is not None
        return total

    def _backward(self, batch: Any, n: int) -> torch.Tensor:
        """Forward and backward of one of ``n`` micro-batches; its loss, detached, float32."""
        if self.mixed:
            with self.autocast():
                loss = self.loss(self.wrapped, batch)
        else:
            loss = self.loss(self.wrapped, batch)
        if n > 1:
            loss = loss / n
        # a NaN/Inf loss seeds NaN gradients: the reduction tells every rank
        loss.backward(backward_seed(loss) if self.seed_nonfinite else None)
        part = loss.detach()
        return part if part.dtype == torch.float32 else part.float()

    def _resolve_unused(self) -> bool:
        """``find_unused_parameters=auto``, after the first backward (all ranks).

        If some parameter got no gradient on any rank, DDP (built without the search) has
        left that step's reduction unfinished: re-wrap the model with the search on,
        forget the strategy's state of the aborted step, and return True (the caller
        redoes the micro-batches). One small agreement collective, once per run.
        """
        self._find_unused = False
        unused = [n for n, p in self.model.named_parameters() if p.requires_grad and p.grad is None]
        flag = torch.tensor([float(len(unused))], device=self.device)
        dist.all_reduce(flag, group=self.dp_group)
        if flag.item() == 0:
            return False
        self.strategy.on_skipped_step()
        del self.wrapped
        gc.collect()  # the old DDP's autograd hooks go with it
        self.wrapped = apply_ddp(self.model, self.mesh, self.strategy, device=self.device, find_unused=True)
        self.wrapped.train(self.model.training)
        self._find_unused = True
        if dist.get_rank() == 0:
            names = (", ".join(unused[:3]) + (f" and {len(unused) - 3} more" if len(unused) > 3 else "")
                     ) or "some parameters (on other ranks)"
            print(f"scidl: hint: {names} got no gradient in the first step; DDP now searches for "
                  "unused parameters every step (set parallel.find_unused_parameters=true to "
                  "say so and skip this check)", file=sys.stderr, flush=True)
        return True

    def clip_grad_norm(self, max_norm: float) -> float:
        return float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))

    def eval_model(self) -> nn.Module | None:
        return self.model if dist.get_rank() == 0 else None

    def split_state(self, state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        return state, {}  # replicas are identical: rank 0 writes one copy

    def pick_state(self, shared: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
        return shared
