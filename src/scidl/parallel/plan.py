"""The parallel plan: how this run's processes share the model, built once from the config.

:class:`ParallelDims` is the process layout (data-parallel replicas ``dp`` x pipeline
stages ``pp``), validated against the world size and laid out as a
``torch.distributed.device_mesh.DeviceMesh`` with dimensions ``("dp", "pp")``: rank ``r``
is stage ``r % pp`` of replica ``r // pp``, so the stages of one pipeline are neighbouring
ranks (one node) and every process group comes from the mesh (``mesh.get_group("dp")``).
A single process gets a 1 x 1 mesh on its one-member group: the same code path.

:class:`ParallelPlan` owns everything that differs between layouts, so the trainer holds
one plan and has no layout branches: the wrapped model (``apply_ddp`` /
``apply_pipeline``, applied from outside in torchtitan's style), forward-backward,
gradient clipping, the model evaluated on rank 0, which part of the checkpoint state is
shared and which is this rank's own, the data-parallel size (the throughput denominator)
and the summary's extra section. Layouts: :class:`~scidl.parallel.ddp.DataParallelPlan`
(``pp = 1``) and :class:`~scidl.parallel.pipeline.PipelinePlan` (``pp > 1``).

Sharded data parallelism (``parallel.shard=full|hybrid``, ``pp = 1``):
:class:`~scidl.parallel.fsdp.ShardedPlan` shards the model with FSDP2 over the ``dp``
dimension (full) or over a 2-D ``(replicate, shard)`` mesh of the same ranks (hybrid);
its model and optimizer state are written per rank through ``torch.distributed.checkpoint``
(see :mod:`scidl.train.checkpoint`).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from scidl.config import ConfigError

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

    from scidl.comm.base import CommStrategy
    from scidl.config import RunConfig
    from scidl.workloads.base import Task

__all__ = ["ParallelDims", "ParallelPlan", "autocast", "build_plan", "per_replica_batch"]


@dataclass(frozen=True)
class ParallelDims:
    """The process layout: ``world_size = dp * pp`` (validated on construction).

    Attributes:
        world_size: number of processes.
        pp: pipeline stages per model replica (1: pure data parallelism).
    """

    world_size: int
    pp: int = 1

    names: ClassVar[tuple[str, str]] = ("dp", "pp")  # mesh dimensions, outermost first (pp innermost: one node)

    def __post_init__(self) -> None:
        if self.pp < 1 or self.world_size % self.pp:
            raise ConfigError(
                f"parallel.pipeline_stages={self.pp} does not divide the {self.world_size} "
                f"process(es); use a process count that is a multiple of {self.pp}")

    @property
    def dp(self) -> int:
        """Data-parallel replicas of the model."""
        return self.world_size // self.pp

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dp, self.pp)

    def coordinate(self, rank: int) -> dict[str, int]:
        """``{"dp": replica, "pp": stage}`` of global ``rank``."""
        return {"dp": rank // self.pp, "pp": rank % self.pp}

    def group_ranks(self, rank: int, dim: str) -> list[int]:
        """Global ranks of ``rank``'s group along mesh dimension ``dim``."""
        c = self.coordinate(rank)
        if dim == "pp":
            return [c["dp"] * self.pp + s for s in range(self.pp)]
        return [d * self.pp + c["pp"] for d in range(self.dp)]

    def build_mesh(self, device_type: str) -> DeviceMesh:
        """The device mesh and its process groups (call on all ranks, in the same order)."""
        from torch.distributed.device_mesh import init_device_mesh

        return init_device_mesh(device_type, self.shape, mesh_dim_names=self.names)


def per_replica_batch(cfg: RunConfig, replicas: int) -> int:
    """Per-replica micro-batch size from ``train.batch_size`` or ``train.global_batch_size``."""
    t = cfg.train
    if t.global_batch_size is None:
        return t.batch_size
    per = t.global_batch_size // (replicas * t.grad_accum)
    if per * replicas * t.grad_accum != t.global_batch_size or per < 1:
        raise ConfigError(
            f"train.global_batch_size={t.global_batch_size} is not divisible by "
            f"world_size ({replicas}) x train.grad_accum ({t.grad_accum})"
        )
    return per


def autocast(device: torch.device, precision: str) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """A factory of the forward pass's autocast context for ``train.precision``."""
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


class ParallelPlan(abc.ABC):
    """One rank's share of the model and the steps that depend on the layout.

    Lifecycle: :func:`build_plan` (all ranks) wraps the model; the trainer builds the
    optimizer on :attr:`model`, calls :meth:`train` once, then per step
    :meth:`forward_backward` and :meth:`clip_grad_norm`; :meth:`eval_model` before each
    evaluation, :meth:`split_state` / :meth:`pick_state` for checkpoints and
    :meth:`report` for the summary. Methods marked "all ranks" run collectives.

    Attributes:
        dims: the layout. mesh: its device mesh. model: this rank's module (the whole
            model, or its pipeline stage): the optimizer and checkpoints hold its
            parameters. wrapped: what trains (``model`` inside DDP).
        carries_nonfinite: whether, after :meth:`forward_backward`, every rank's reduced
            gradients hold any rank's NaN/Inf (then a local check agrees on all ranks and
            the trainer needs no agreement collective, for strategies that reduce every
            entry: ``CommStrategy.nonfinite_agreed``).
    """

    carries_nonfinite = False
    #: the loss differentiates through its inputs (PINN residuals): :meth:`forward_loss`
    #: then keeps autograd on (set by :func:`build_plan` from ``Task.eval_needs_grad``)
    loss_needs_grad = False

    def __init__(self, dims: ParallelDims, mesh: DeviceMesh, model: nn.Module,
                 wrapped: nn.Module, device: torch.device, precision: str) -> None:
        self.dims, self.mesh, self.model, self.wrapped = dims, mesh, model, wrapped
        self.device = device
        self.autocast = autocast(device, precision)

    @property
    def dp_size(self) -> int:
        """Data-parallel replicas: the sampler's shards and the global batch's factor."""
        return self.dims.dp

    @property
    def dp_rank(self) -> int:
        """This rank's replica (its data shard)."""
        return self.mesh.get_local_rank("dp")

    @property
    def dp_group(self) -> Any:
        return self.mesh.get_group("dp")

    def train(self) -> None:
        """Put the wrapped model in training mode."""
        self.wrapped.train()

    @abc.abstractmethod
    def forward_backward(self, micro: list[Any]) -> torch.Tensor:
        """Loss of ``micro`` (averaged over its micro-batches), gradients accumulated and
        reduced over the replicas (all ranks). Ranks holding no loss return 0."""

    def closure(self, optimizer: torch.optim.Optimizer, micro: list[Any]) -> Callable[[], torch.Tensor]:
        """For optimizers that re-evaluate the loss (L-BFGS, safeguarded methods): a closure
        returning the loss averaged over replicas, so every rank takes identical decisions.
        Layouts that cannot re-evaluate override it to raise ConfigError."""

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=False)
            loss = self.forward_backward(micro)
            torch.distributed.all_reduce(loss, group=self.dp_group)
            return loss / self.dp_size

        loss_fn = getattr(self, "loss", None)  # layouts whose every rank holds the whole loss
        if loss_fn is not None:
            # forward-only loss of the same batch, this rank's (safeguards that only compare
            # losses); without it a safeguard evaluates through the closure itself
            closure.evaluate = lambda: self.forward_loss(micro, loss_fn)  # type: ignore[attr-defined]
        return closure

    def forward_loss(self, micro: list[Any], loss_fn: Callable[..., torch.Tensor]) -> torch.Tensor:
        """This rank's loss of ``micro`` (mean over micro-batches) from forward passes
        without gradients (with autograd on if :attr:`loss_needs_grad`, for losses that
        differentiate through their inputs): no backward of the parameters and no
        collective (DDP's wrapper is bypassed)."""
        total = torch.zeros((), dtype=torch.float32, device=self.device)
        with torch.set_grad_enabled(self.loss_needs_grad):  # no backward either way
            for batch in micro:
                with self.autocast():
                    total += loss_fn(self.model, batch).detach().float()
        return total / len(micro)

    @abc.abstractmethod
    def clip_grad_norm(self, max_norm: float) -> float:
        """Scale gradients to a global 2-norm of at most ``max_norm``; the norm before (all ranks)."""

    @abc.abstractmethod
    def eval_model(self) -> nn.Module | None:
        """The whole model on rank 0 (weights current), None elsewhere (all ranks)."""

    @abc.abstractmethod
    def split_state(self, state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``state`` (model and optimizer state dicts) as (the checkpoint's shared part,
        written by rank 0; this rank's own part, written by every rank)."""

    @abc.abstractmethod
    def pick_state(self, shared: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
        """The model and optimizer state of this rank from a checkpoint's two parts."""

    def report(self, step_time_s: float | None) -> dict[str, Any]:
        """Extra sections of ``summary.json`` (none by default)."""
        return {}


def build_plan(cfg: RunConfig, task: Task, device: torch.device, world_size: int,
               strategy: CommStrategy) -> ParallelPlan:
    """The plan ``cfg.parallel`` asks for, with ``task.model`` wrapped (call on all ranks)."""
    dims = ParallelDims(world_size, cfg.parallel.pipeline_stages)
    mesh = dims.build_mesh(device.type)
    if dims.pp > 1:
        from scidl.parallel.pipeline import PipelinePlan

        plan: ParallelPlan = PipelinePlan.build(cfg, task, dims, mesh, device, strategy)
    elif cfg.parallel.shard != "none":
        from scidl.parallel.fsdp import ShardedPlan, check_shard_layout

        check_shard_layout(cfg, world_size)
        plan = ShardedPlan.build(cfg, task, dims, mesh, device, strategy)
    else:
        from scidl.parallel.ddp import DataParallelPlan

        plan = DataParallelPlan.build(cfg, task, dims, mesh, device, strategy)
    plan.loss_needs_grad = task.loss_needs_grad
    return plan
