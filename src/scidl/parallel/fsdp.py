"""Sharded data parallelism: FSDP2 (``torch.distributed.fsdp.fully_shard``) on the plan's mesh.

``parallel.shard=full`` shards every parameter (and so its gradient and optimizer state)
over all data-parallel ranks: each rank stores about 1/N of the model, all-gathers a
layer's parameters for its forward and backward, and reduce-scatters its gradients.
``parallel.shard=hybrid`` shards inside groups of ``parallel.shard_size`` ranks (one
node: ``LOCAL_WORLD_SIZE``) and replicates across the groups (HSDP, a 2-D mesh
``("replicate", "shard")``): the all-gathers stay inside a node and only the gradient
shards cross nodes (an all-reduce among the replicas).

FSDP does its own gradient communication, so of the communication strategies only those
that are a plain average apply: ``dense``, and ``bf16`` / ``fp16`` as FSDP's
``MixedPrecisionPolicy(reduce_dtype=...)``. The others (compression, hooks on DDP
buckets) are rejected by :func:`check_shard_comm`. Pipeline stages do not compose with
sharding here (:func:`check_shard_layout`).

Gradients and parameters are DTensors: clipping uses ``clip_grad_norm_`` (it reduces the
norm over the mesh), evaluation gathers the whole model onto rank 0
(``get_model_state_dict(full_state_dict=True)``), checkpoints go through
``torch.distributed.checkpoint`` (:mod:`scidl.train.checkpoint`), each rank writing its
own shards.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from scidl.config import ConfigError
from scidl.parallel.plan import ParallelDims, ParallelPlan
from scidl.train.step_stats import backward_seed

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

    from scidl.comm.base import CommStrategy
    from scidl.config import RunConfig
    from scidl.workloads.base import LossFn, Task

__all__ = ["SHARD_COMM", "ShardedPlan", "apply_fsdp", "check_shard_comm", "check_shard_layout",
           "fsdp_step_bytes", "local_bytes", "shard_groups"]

# comm.strategy -> FSDP's gradient reduction dtype (None: the parameters' dtype)
SHARD_COMM: dict[str, torch.dtype | None] = {"dense": None, "bf16": torch.bfloat16,
                                              "fp16": torch.float16}


def check_shard_comm(strategy: str, shard: str) -> None:
    """Raise ConfigError when ``comm.strategy`` cannot run under ``parallel.shard``."""
    if shard != "none" and strategy not in SHARD_COMM:
        raise ConfigError(
            f"comm.strategy={strategy} does not apply with parallel.shard={shard}: FSDP reduces "
            f"gradients itself (reduce-scatter); use comm.strategy={'|'.join(SHARD_COMM)}")


def shard_groups(dp: int, shard: str, shard_size: int | None,
                 local_world: int | None = None) -> tuple[int, int]:
    """(replicas, ranks per sharding group) of ``dp`` data-parallel ranks.

    ``full``: (1, dp). ``hybrid``: (dp / s, s) with s = ``shard_size``, else the
    launcher's ``local_world`` (processes per node), else ``dp`` (one node).
    Raises ConfigError when s does not divide ``dp``.
    """
    if shard != "hybrid":
        return 1, dp
    size = shard_size or local_world or dp
    if size > dp or dp % size:
        key = "parallel.shard_size" if shard_size else "LOCAL_WORLD_SIZE"
        raise ConfigError(f"{key}={size} does not divide the {dp} data-parallel process(es) "
                          "for parallel.shard=hybrid; set parallel.shard_size to a divisor")
    return dp // size, size


def check_shard_layout(cfg: RunConfig, world: int, local_world: int | None = None) -> None:
    """Every check of ``parallel.shard`` that needs only the config and the world size."""
    par = cfg.parallel
    if par.shard == "none":
        if par.shard_size is not None:
            raise ConfigError("parallel.shard_size needs parallel.shard=hybrid")
        return
    if par.pipeline_stages > 1:
        raise ConfigError(f"parallel.shard={par.shard} does not compose with "
                          f"parallel.pipeline_stages={par.pipeline_stages} in SciDL; use one of them")
    if par.shard_size is not None and par.shard != "hybrid":
        raise ConfigError("parallel.shard_size needs parallel.shard=hybrid")
    check_shard_comm(cfg.comm.strategy, par.shard)
    shard_groups(ParallelDims(world, 1).dp, par.shard, par.shard_size, local_world)


def _local_world() -> int | None:
    value = os.environ.get("LOCAL_WORLD_SIZE")
    return int(value) if value and value.isdigit() else None


def apply_fsdp(model: nn.Module, mesh: DeviceMesh, *, reduce_dtype: torch.dtype | None = None,
               reshard_after_forward: bool = True) -> nn.Module:
    """``model`` sharded with ``fully_shard`` over ``mesh`` (1-D: full, 2-D
    ``(replicate, shard)``: hybrid), in torchtitan's style: each direct child that holds
    parameters is its own FSDP unit (its parameters are gathered only while it runs),
    then the root takes the rest. Returns the same module (now an ``FSDPModule``; all ranks).
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(reduce_dtype=reduce_dtype)
    for child in model.children():
        if any(p.requires_grad for p in child.parameters()):
            fully_shard(child, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    return model


def _local(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def local_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of this rank's storage of ``tensors`` (a DTensor counts its local shard)."""
    return sum(_local(t).numel() * _local(t).element_size() for t in tensors)


def fsdp_step_bytes(param_bytes: int, shard_size: int, replicas: int, grad_elem_bytes: int = 4,
                    backend: str | None = None) -> int:
    """Bytes one rank sends per optimizer step under FSDP (a model, not a measurement):
    the parameters all-gathered twice (forward, and backward after resharding), the
    gradients reduce-scattered inside the shard group (at ``grad_elem_bytes`` per
    element) and, for hybrid, the gradient shard all-reduced across the replicas."""
    from scidl.comm.accounting import allgather_bytes, reduce_scatter_bytes, ring_allreduce_bytes

    shard = param_bytes // max(shard_size, 1)
    grads = param_bytes // 4 * grad_elem_bytes
    sent = 2 * allgather_bytes(shard, shard_size, backend)
    sent += reduce_scatter_bytes(grads, shard_size, backend)
    sent += ring_allreduce_bytes(grads // max(shard_size, 1), replicas, backend)
    return int(sent)


class LocalGradCheck:
    """Whether any of this rank's gradient shards holds a NaN/Inf (one sum per shard)."""

    def __init__(self, params: Iterable[nn.Parameter]) -> None:
        self.params = list(params)

    def check(self) -> bool:
        sums = [_local(p.grad).sum() for p in self.params if p.grad is not None]
        return bool(sums) and not math.isfinite(float(torch.stack(sums).sum()))


class ShardedPlan(ParallelPlan):
    """Data parallelism with sharded parameters (FSDP2); ``grad_accum`` micro-batches per
    step with the gradient reduction only on the last. Gradients of different ranks are
    different shards, so a NaN/Inf check needs the trainer's agreement collective."""

    carries_nonfinite = False

    def __init__(self, dims: ParallelDims, mesh: DeviceMesh, model: nn.Module, shard_mesh: DeviceMesh,
                 full_model: nn.Module | None, device: torch.device, precision: str, loss: LossFn,
                 shard: str, seed_nonfinite: bool = True) -> None:
        super().__init__(dims, mesh, model, model, device, precision)
        self.shard_mesh, self.shard, self.loss = shard_mesh, shard, loss
        self._full_model = full_model  # rank 0's unsharded copy, loaded for evaluation
        self.seed_nonfinite = seed_nonfinite
        self.grad_check = LocalGradCheck(model.parameters())
        self._reduce_bytes = 4  # bytes per gradient element on the wire (set by build)

    @classmethod
    def build(cls, cfg: RunConfig, task: Task, dims: ParallelDims, mesh: DeviceMesh,
              device: torch.device, strategy: CommStrategy) -> ShardedPlan:
        from torch.distributed.device_mesh import init_device_mesh

        par = cfg.parallel
        replicas, size = shard_groups(dims.dp, par.shard, par.shard_size, _local_world())
        if par.shard == "hybrid":
            shard_mesh = init_device_mesh(device.type, (replicas, size),
                                          mesh_dim_names=("replicate", "shard"))
        else:
            shard_mesh = mesh["dp"]
        model = task.model.to(device)
        full = copy.deepcopy(model) if dist.get_rank() == 0 else None
        apply_fsdp(model, shard_mesh, reduce_dtype=SHARD_COMM[cfg.comm.strategy])
        plan = cls(dims, mesh, model, shard_mesh, full, device, cfg.train.precision, task.loss,
                   par.shard, seed_nonfinite=cfg.train.skip_nonfinite)
        reduce = SHARD_COMM[cfg.comm.strategy]
        plan._reduce_bytes = torch.empty((), dtype=reduce).element_size() if reduce else 4
        return plan

    def forward_backward(self, micro: list[Any]) -> torch.Tensor:
        total: torch.Tensor | None = None
        for i, batch in enumerate(micro):
            self.model.set_requires_gradient_sync(i == len(micro) - 1)  # type: ignore[operator]
            with self.autocast():
                loss = self.loss(self.model, batch)
                loss = loss / len(micro) if len(micro) > 1 else loss
            loss.backward(backward_seed(loss) if self.seed_nonfinite else None)
            part = loss.detach()
            part = part if part.dtype == torch.float32 else part.float()
            total = part if total is None else total + part
        assert total is not None
        return total

    def clip_grad_norm(self, max_norm: float) -> float:
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        return float(_full(norm))

    def full_state(self) -> dict[str, torch.Tensor]:
        """The whole model's state dict on rank 0 (CPU), {} elsewhere (all ranks)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state: dict[str, Any] = get_model_state_dict(self.model, options=StateDictOptions(
            full_state_dict=True, cpu_offload=True))
        return state

    def eval_model(self) -> nn.Module | None:
        full = self.full_state()
        if self._full_model is None:
            return None
        self._full_model.load_state_dict(full)
        return self._full_model

    def split_state(self, state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        return {k: None for k in state}, {}  # model and optimizer go through DCP

    def pick_state(self, shared: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
        return shared

    def report(self, step_time_s: float | None) -> dict[str, Any]:
        names = self.shard_mesh.mesh_dim_names or ()
        sizes = dict(zip(names, self.shard_mesh.shape, strict=True))
        replicas, size = sizes.get("replicate", 1), sizes.get("shard", sizes.get("dp", 1))
        full = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return {"sharding": {
            "shard": self.shard, "replicas": replicas, "shard_size": size,
            "param_bytes_per_rank": local_bytes(self.model.parameters()),
            "bytes_sent_per_step_per_rank": fsdp_step_bytes(
                full, size, replicas, self._reduce_bytes, dist.get_backend())}}


def _full(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t

