"""Hybrid parallelism: pipeline stages x data-parallel replicas (HyPar-Flow style).

World = S stages x D replicas on the device mesh ``("dp", "pp")`` of
:class:`~scidl.parallel.plan.ParallelDims`: rank ``r`` is stage ``r % S`` of replica
``r // S``, so a pipeline's stages are neighbouring ranks (one node, the mesh's ``pp``
group) and each stage's replicas form a data-parallel group (the ``dp`` group) whose
gradients the configured communication strategy reduces.
The model must be an ``nn.Sequential`` of blocks (see :mod:`scidl.parallel.blocks`); it is
cut into contiguous stages balanced by per-block forward+backward time measured on a
sample microbatch (rank 0 measures and broadcasts, so every rank cuts identically).
Stages run with ``torch.distributed.pipelining`` (GPipe or 1F1B over M microbatches).

Bubble fraction of both schedules: (S - 1) / (M + S - 1). Predicted step time:
(M + S - 1) * max_s t_s, with t_s the forward+backward time of stage s per microbatch.
"""

from __future__ import annotations

import copy
import io
import resource
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from scidl.config import ConfigError
from scidl.parallel.config import ParallelConfig
from scidl.parallel.plan import ParallelDims, ParallelPlan, per_replica_batch
from scidl.runtime.ddp import DDPModule

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

    from scidl.comm.base import CommStrategy
    from scidl.config import RunConfig
    from scidl.workloads.base import Task

__all__ = [
    "BlockCost", "PipelineError", "PipelinePlan", "PipelineStages", "StageModule", "apply_pipeline",
    "balance", "blocks_of", "check_sizes", "gather_full_state", "measure_block_costs", "stage_costs",
    "stage_find_unused",
]


class PipelineError(ValueError):
    """The model or the requested layout cannot be pipelined; the message says why."""


# ------------------------------------------------------------------ cost and balance


@dataclass
class BlockCost:
    """Measured cost of one block on the sample microbatch, and the names of its trainable
    parameters that got no gradient there (``unused``)."""

    time_s: float
    activation_bytes: int
    param_bytes: int
    unused: list[str] = field(default_factory=list)


def blocks_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's blocks, or a clear error if it cannot be split."""
    if not isinstance(model, nn.Sequential):
        raise PipelineError(
            f"{type(model).__name__} cannot be split into pipeline stages: write the model as "
            "an nn.Sequential of blocks (scidl.parallel.blocks has ResNet and U-Net builders; "
            "skips travel as tuples between blocks)"
        )
    return list(model.named_children())


def _tensors(x: Any) -> list[torch.Tensor]:
    return [x] if isinstance(x, torch.Tensor) else [t for t in x if isinstance(t, torch.Tensor)]


def _detach(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().requires_grad_(x.is_floating_point())
    return tuple(_detach(t) for t in x)


def measure_block_costs(blocks: list[nn.Module], sample: torch.Tensor, repeats: int = 3) -> list[BlockCost]:
    """Forward+backward time and saved-activation bytes of each block on ``sample``."""
    costs = []
    x: Any = sample
    blocks = copy.deepcopy(blocks)  # measuring must not touch the real blocks (norm stats)
    for block in blocks:
        saved = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal saved
            saved += t.numel() * t.element_size()
            return t

        times = []
        for r in range(repeats + 1):
            inp = _detach(x)
            saved = 0
            t0 = time.perf_counter()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = block(inp)
            torch.stack([t.float().sum() for t in _tensors(out)]).sum().backward()
            if r:  # the first pass warms caches
                times.append(time.perf_counter() - t0)
        unused = [n for n, p in block.named_parameters() if p.requires_grad and p.grad is None]
        block.zero_grad(set_to_none=True)
        params = sum(p.numel() * p.element_size() for p in block.parameters())
        costs.append(BlockCost(sorted(times)[len(times) // 2], saved, params, unused))
        with torch.no_grad():
            x = block(x)
    return costs


def balance(costs: list[float], stages: int) -> list[int]:
    """Contiguous split of ``costs`` into ``stages`` parts minimising the largest part."""
    n = len(costs)
    if n < stages:
        raise PipelineError(f"the model has {n} blocks, fewer than the {stages} stages asked for")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for s in range(1, stages + 1):
        for j in range(s, n - (stages - s) + 1):
            for i in range(s - 1, j):
                v = max(best[s - 1][i], prefix[j] - prefix[i])
                if v < best[s][j]:
                    best[s][j], cut[s][j] = v, i
    sizes, j = [], n
    for s in range(stages, 0, -1):
        i = cut[s][j]
        sizes.append(j - i)
        j = i
    return sizes[::-1]


def stage_costs(costs: list[float], sizes: list[int]) -> list[float]:
    out, i = [], 0
    for k in sizes:
        out.append(sum(costs[i:i + k]))
        i += k
    return out


def check_sizes(sizes: list[int], costs: list[float], stages: int, max_imbalance: float) -> None:
    """Reject an explicit split that is malformed or too unbalanced (with a better one)."""
    if len(sizes) != stages or any(k < 1 for k in sizes) or sum(sizes) != len(costs):
        raise PipelineError(
            f"parallel.stage_sizes={sizes} must list {stages} positive block counts summing "
            f"to the model's {len(costs)} blocks"
        )
    per = stage_costs(costs, sizes)
    mean = sum(per) / len(per)
    if mean > 0 and max(per) / mean > max_imbalance:
        good = balance(costs, stages)
        raise PipelineError(
            f"parallel.stage_sizes={sizes} is unbalanced: stage times "
            f"{[f'{c * 1e3:.2f} ms' for c in per]}, slowest {max(per) / mean:.2f}x the mean "
            f"(limit parallel.max_imbalance={max_imbalance}); measured balance: "
            f"stage_sizes={good}, or leave stage_sizes unset to balance automatically"
        )


# ------------------------------------------------------------------------- engine


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward hands on a contiguous gradient.

    The gradient of a tensor that fed ``torch.cat`` (a U-Net skip) is a strided slice;
    the pipeline sends it to the previous stage, whose receive buffer copies those strides,
    and gloo only receives into contiguous buffers.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g.contiguous()


def _contiguous_grad(t: Any) -> Any:
    return _ContiguousGrad.apply(t) if isinstance(t, torch.Tensor) and t.requires_grad else t


class StageModule(nn.Sequential):
    """A run of blocks; a stage receiving several tensors (activation + skips) gets them
    as separate arguments and hands them on as one tuple. Parameter names are those of
    the full model, so state dicts of all stages merge into the full model's."""

    def forward(self, *args: Any) -> Any:
        args = tuple(_contiguous_grad(a) for a in args)
        state = args[0] if len(args) == 1 else tuple(args)
        for block in self:
            state = block(state)
        # gloo sends only contiguous buffers, and receive buffers copy the sender's strides
        if isinstance(state, torch.Tensor):
            return state.contiguous()
        return tuple(t.contiguous() for t in state)



@dataclass
class PipelineStages:
    """This rank's stage of a pipelined model (what :func:`apply_pipeline` returns).

    Attributes:
        module: the stage's blocks (parameter names as in the full model).
        ddp: ``module`` inside DDP over the stage's replicas (the mesh's ``dp`` group).
        schedule: the ``torch.distributed.pipelining`` schedule over the ``pp`` group.
        stage: this rank's stage index; stages: the number of stages.
        costs: measured cost of every block; sizes: blocks per stage.
    """

    module: StageModule
    ddp: DDP
    schedule: Any
    stage: int
    stages: int
    costs: list[BlockCost]
    sizes: list[int]

    @property
    def is_last(self) -> bool:
        return self.stage == self.stages - 1


def _measured_costs(named: list[tuple[str, nn.Module]], sample: torch.Tensor) -> list[BlockCost]:
    """Block costs measured on rank 0 and broadcast, so every rank cuts identically."""
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        box[0] = [asdict(c) for c in measure_block_costs([b for _, b in named], sample)]
    dist.broadcast_object_list(box, src=0)
    return [BlockCost(**c) for c in box[0]]


def apply_pipeline(model: nn.Module, mesh: DeviceMesh, cfg: ParallelConfig, *, loss_fn: Any,
                   device: torch.device, sample: torch.Tensor, strategy: CommStrategy,
                   ddp_kwargs: dict[str, Any]) -> PipelineStages:
    """Cut ``model`` into ``mesh["pp"]`` stages and keep this rank's (all ranks).

    The stage is wrapped in DDP over the mesh's ``dp`` group with ``strategy`` as its
    communication hook, and scheduled over the ``pp`` group. DDP searches for unused
    parameters only where it must: ``cfg.find_unused_parameters`` true/false, or with
    ``auto`` when a block of this stage left a trainable parameter without a gradient in
    the cost measurement (:func:`stage_find_unused`).
    """
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    if loss_fn is None:
        raise PipelineError("this workload's Task has no criterion(output, target), which "
                            "pipeline stages need (the loss is computed on the last stage)")
    named = blocks_of(model)
    stage, stages = mesh.get_local_rank("pp"), cfg.pipeline_stages
    costs = _measured_costs(named, sample)
    times = [c.time_s for c in costs]
    if cfg.stage_sizes is not None:
        check_sizes(cfg.stage_sizes, times, stages, cfg.max_imbalance)
        sizes = list(cfg.stage_sizes)
    else:
        sizes = balance(times, stages)
    start = sum(sizes[:stage])
    module = StageModule(OrderedDict(named[start:start + sizes[stage]])).to(device)
    find_unused = stage_find_unused(cfg.find_unused_parameters, costs[start:start + sizes[stage]])
    ddp = DDPModule(module, process_group=mesh.get_group("dp"), find_unused_parameters=find_unused,
                    **ddp_kwargs)
    pipe_stage = PipelineStage(ddp, stage, stages, device, group=mesh.get_group("pp"))
    sched = ScheduleGPipe if cfg.schedule == "gpipe" else Schedule1F1B
    schedule = sched(pipe_stage, n_microbatches=cfg.microbatches, loss_fn=loss_fn)
    strategy.install(ddp, mesh.get_group("dp"))
    return PipelineStages(module, ddp, schedule, stage, stages, costs, sizes)


def stage_find_unused(setting: bool | str, costs: list[BlockCost]) -> bool:
    """DDP's ``find_unused_parameters`` for a stage made of the blocks measured in ``costs``:
    the explicit setting, or with ``auto`` whether any of them has an unused parameter."""
    if isinstance(setting, bool):
        return setting
    return any(c.unused for c in costs)


def sample_microbatch(task: Task, batch_size: int) -> torch.Tensor:
    """The inputs of the first microbatch of ``task``'s data (for measuring block costs)."""
    loader = DataLoader(task.train_data, batch_size=max(batch_size, 1), collate_fn=task.collate_fn,
                        generator=torch.Generator())
    sample: torch.Tensor = next(iter(loader))[0]
    return sample


class PipelinePlan(ParallelPlan):
    """Pipeline stages x data-parallel replicas: this rank trains one stage of one replica.

    Rank 0 keeps the whole model for evaluation and gathers the stages' weights into it
    (:meth:`eval_model`); every rank checkpoints its own stage (:meth:`split_state`).
    """

    wrapped: DDP

    def __init__(self, dims: ParallelDims, mesh: DeviceMesh, stages: PipelineStages,
                 device: torch.device, precision: str, par: ParallelConfig, optimizer_name: str,
                 full_model: nn.Module | None, strategy: CommStrategy | None = None) -> None:
        super().__init__(dims, mesh, stages.module, stages.ddp, device, precision)
        self.stages, self.par, self.strategy = stages, par, strategy
        self._optimizer_name, self._full_model = optimizer_name, full_model

    @classmethod
    def build(cls, cfg: RunConfig, task: Task, dims: ParallelDims, mesh: DeviceMesh,
              device: torch.device, strategy: CommStrategy) -> PipelinePlan:
        if cfg.train.grad_accum != 1:
            raise ConfigError("with pipeline stages use parallel.microbatches, not train.grad_accum")
        par = cfg.parallel
        sample = sample_microbatch(task, per_replica_batch(cfg, dims.dp) // par.microbatches)
        ddp_kwargs: dict[str, Any] = dict(strategy.ddp_kwargs())
        if device.type == "cuda":
            ddp_kwargs["device_ids"] = [device.index]
        stages = apply_pipeline(task.model, mesh, par, loss_fn=task.criterion, device=device,
                                sample=sample, strategy=strategy, ddp_kwargs=ddp_kwargs)
        full = task.model if dist.get_rank() == 0 else None  # only rank 0 evaluates
        return cls(dims, mesh, stages, device, cfg.train.precision, par, cfg.optim.name, full, strategy)

    def forward_backward(self, micro: list[Any]) -> torch.Tensor:
        """One pipelined step on ``(x, y)`` (train.grad_accum is 1: ``micro`` is one batch);
        the mean loss on the last stage, 0 on the others."""
        x, y = micro[0][0], micro[0][1]
        if x.shape[0] % self.par.microbatches:
            raise PipelineError(f"batch of {x.shape[0]} does not split into "
                                f"parallel.microbatches={self.par.microbatches}")
        losses: list[torch.Tensor] = []
        st = self.stages
        # One gradient reduction per step: the stage prepares DDP's reducer itself before
        # its last backward. DDP's forward must not prepare it too; the schedule's shape
        # pass (first step) calls the stage outside no_sync, which would reduce the first
        # microbatch's partial gradients as well and count them into the bucket rebuild.
        with self.autocast(), st.ddp.no_sync():
            if st.stage == 0:
                st.schedule.step(x)
            elif st.is_last:
                st.schedule.step(target=y, losses=losses)
            else:
                st.schedule.step()
        if self.strategy is not None:
            self.strategy.count_sync()
        if st.is_last:
            return torch.stack([loss.detach().float() for loss in losses]).mean()
        return torch.zeros((), device=self.device)

    def closure(self, optimizer: torch.optim.Optimizer, micro: list[Any]) -> Callable[[], torch.Tensor]:
        raise ConfigError(f"optimizer {self._optimizer_name!r} re-evaluates the loss (closure), "
                          "which pipeline stages do not support")

    def clip_grad_norm(self, max_norm: float) -> float:
        """Clip by the global 2-norm over all stages (replicas hold equal gradients)."""
        sq = sum((p.grad.float() ** 2).sum() for p in self.model.parameters() if p.grad is not None)
        norm = torch.as_tensor(sq, device=self.device, dtype=torch.float32)
        dist.all_reduce(norm, group=self.mesh.get_group("pp"))
        norm = norm.sqrt()
        coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(coef)
        return float(norm)

    def eval_model(self) -> nn.Module | None:
        full = gather_full_state(self.stages.module, self.mesh)
        if full is None or self._full_model is None:
            return None
        self._full_model.load_state_dict(full)
        return self._full_model

    def split_state(self, state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        return {k: None for k in state}, state  # each rank holds a different stage

    def pick_state(self, shared: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
        return own

    def report(self, step_time_s: float | None) -> dict[str, Any]:
        """Stage balance: blocks, predicted time and memory per stage, bubble, step time."""
        st = self.stages
        times = [c.time_s for c in st.costs]
        per_stage = stage_costs(times, st.sizes)
        acts = stage_costs([float(c.activation_bytes) for c in st.costs], st.sizes)
        params = stage_costs([float(c.param_bytes) for c in st.costs], st.sizes)
        S, M = st.stages, self.par.microbatches
        out: dict[str, Any] = {
            "stages": S, "replicas": self.dp_size, "microbatches": M,
            "schedule": self.par.schedule, "stage_sizes": st.sizes,
            "stage_time_s": per_stage, "stage_activation_bytes_per_microbatch": acts,
            "stage_param_bytes": params,
            "bubble_fraction": (S - 1) / (M + S - 1),
            "predicted_step_s": (M + S - 1) * max(per_stage),
            "imbalance": max(per_stage) / (sum(per_stage) / S) if sum(per_stage) else 1.0,
            "peak_rss_mb_this_rank": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        if step_time_s is not None:
            out["measured_step_s"] = step_time_s
        return {"pipeline": out}


def gather_full_state(module: nn.Module, mesh: DeviceMesh) -> dict[str, torch.Tensor] | None:
    """The full model's state dict on rank 0, None elsewhere (call on all ranks).

    The stages of replica 0 (rank 0's ``pp`` group) send their state to rank 0; the other
    replicas hold the same weights and send nothing.
    """
    if mesh.get_local_rank("dp") != 0:
        return None
    buf = io.BytesIO()  # tensors travel as torch.save bytes, decoded with weights_only=True
    torch.save({k: v.cpu() for k, v in module.state_dict().items()}, buf)
    group = mesh.get_group("pp")
    blobs: list[Any] | None = [None] * dist.get_world_size(group) if dist.get_rank() == 0 else None
    dist.gather_object(buf.getvalue(), blobs, dst=0, group=group)
    if blobs is None:
        return None
    full: dict[str, torch.Tensor] = {}
    for b in blobs:
        full.update(torch.load(io.BytesIO(b), weights_only=True))
    return full
