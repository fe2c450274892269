"""Hybrid parallelism: pipeline stages x data-parallel replicas (HyPar-Flow style).

World = S stages x D replicas. Rank ``r`` is stage ``r % S`` of replica ``r // S``, so a
pipeline's stages are neighbouring ranks (one node) and each stage's replicas form a
data-parallel group whose gradients the configured communication strategy reduces.
The model must be an ``nn.Sequential`` of blocks (see :mod:`scidl.parallel.blocks`); it is
cut into contiguous stages balanced by per-block forward+backward time measured on a
sample microbatch (rank 0 measures and broadcasts, so every rank cuts identically).
Stages run with ``torch.distributed.pipelining`` (GPipe or 1F1B over M microbatches).

Bubble fraction of both schedules: (S - 1) / (M + S - 1). Predicted step time:
(M + S - 1) * max_s t_s, with t_s the forward+backward time of stage s per microbatch.
"""

from __future__ import annotations

import copy
import resource
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from scidl.parallel.config import ParallelConfig


class PipelineError(ValueError):
    """The model or the requested layout cannot be pipelined; the message says why."""


@dataclass(frozen=True)
class Layout:
    """Where this rank sits in the stages x replicas grid."""

    stages: int
    replicas: int
    stage: int
    replica: int

    @staticmethod
    def of(world: int, rank: int, stages: int) -> Layout:
        if world % stages:
            raise PipelineError(
                f"parallel.pipeline_stages={stages} does not divide the {world} processes; "
                f"use a process count that is a multiple of {stages}"
            )
        return Layout(stages, world // stages, rank % stages, rank // stages)

    def pipeline_ranks(self, replica: int | None = None) -> list[int]:
        d = self.replica if replica is None else replica
        return [d * self.stages + s for s in range(self.stages)]

    def replica_ranks(self, stage: int | None = None) -> list[int]:
        s = self.stage if stage is None else stage
        return [d * self.stages + s for d in range(self.replicas)]


def make_groups(layout: Layout) -> tuple[Any, Any]:
    """(pipeline group, data-parallel group) of this rank. Call on all ranks."""
    pp_group = dp_group = None
    for d in range(layout.replicas):  # every rank creates every group, in the same order
        g = dist.new_group(layout.pipeline_ranks(d))
        if d == layout.replica:
            pp_group = g
    for s in range(layout.stages):
        g = dist.new_group(layout.replica_ranks(s))
        if s == layout.stage:
            dp_group = g
    return pp_group, dp_group


# ------------------------------------------------------------------ cost and balance


@dataclass
class BlockCost:
    """Measured cost of one block on the sample microbatch."""

    time_s: float
    activation_bytes: int
    param_bytes: int


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
        block.zero_grad(set_to_none=True)
        params = sum(p.numel() * p.element_size() for p in block.parameters())
        costs.append(BlockCost(sorted(times)[len(times) // 2], saved, params))
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



class PipelineEngine:
    """One rank's stage of a pipelined, data-parallel model.

    Args:
        model: the full ``nn.Sequential`` (identical on every rank).
        loss_fn: ``loss_fn(output, target)`` evaluated on the last stage per microbatch.
        cfg: the ``parallel`` config.
        device: this rank's device.
        sample: one microbatch of inputs, for measuring block costs.
        ddp_kwargs: keyword arguments for the stage's DDP wrapper (from the comm strategy).
    """

    def __init__(self, model: nn.Module, loss_fn: Any, cfg: ParallelConfig, device: torch.device,
                 sample: torch.Tensor, ddp_kwargs: dict[str, Any]) -> None:
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        if loss_fn is None:
            raise PipelineError("this workload's Task has no criterion(output, target), which "
                                "pipeline stages need (the loss is computed on the last stage)")
        named = blocks_of(model)
        self.cfg = cfg
        self.layout = Layout.of(dist.get_world_size(), dist.get_rank(), cfg.pipeline_stages)
        self.pp_group, self.dp_group = make_groups(self.layout)
        box: list[Any] = [None]
        if dist.get_rank() == 0:  # one measurement, so every rank cuts identically
            box[0] = [asdict(c) for c in measure_block_costs([b for _, b in named], sample)]
        dist.broadcast_object_list(box, src=0)
        self.costs = [BlockCost(**c) for c in box[0]]
        times = [c.time_s for c in self.costs]
        if cfg.stage_sizes is not None:
            check_sizes(cfg.stage_sizes, times, cfg.pipeline_stages, cfg.max_imbalance)
            self.sizes = list(cfg.stage_sizes)
        else:
            self.sizes = balance(times, cfg.pipeline_stages)
        start = sum(self.sizes[: self.layout.stage])
        mine = named[start:start + self.sizes[self.layout.stage]]
        self.module = StageModule(OrderedDict(mine)).to(device)  # keys as in the full model
        # find_unused_parameters=True turns off DDP's bucket rebuild after the first step,
        # whose bookkeeping double-counts parameters when one step runs M backwards.
        self.ddp = DDP(self.module, process_group=self.dp_group, find_unused_parameters=True,
                       **ddp_kwargs)
        self.stage = PipelineStage(self.ddp, self.layout.stage, cfg.pipeline_stages, device,
                                   group=self.pp_group)
        sched = ScheduleGPipe if cfg.schedule == "gpipe" else Schedule1F1B
        self.schedule = sched(self.stage, n_microbatches=cfg.microbatches, loss_fn=loss_fn)
        self.device = device

    @property
    def is_last(self) -> bool:
        return self.layout.stage == self.layout.stages - 1

    def forward_backward(self, batch: Any) -> torch.Tensor:
        """Run one pipelined step on ``(x, y)``; returns the mean loss on the last stage, else 0."""
        x, y = batch[0], batch[1]
        if x.shape[0] % self.cfg.microbatches:
            raise PipelineError(f"batch of {x.shape[0]} does not split into "
                                f"parallel.microbatches={self.cfg.microbatches}")
        losses: list[torch.Tensor] = []
        if self.layout.stage == 0:
            self.schedule.step(x)
        elif self.is_last:
            self.schedule.step(target=y, losses=losses)
        else:
            self.schedule.step()
        if self.is_last:
            return torch.stack([loss.detach().float() for loss in losses]).mean()
        return torch.zeros((), device=self.device)

    def grad_norm(self) -> torch.Tensor:
        """Global gradient 2-norm over all stages (replicas hold equal gradients)."""
        sq = sum((p.grad.float() ** 2).sum() for p in self.module.parameters() if p.grad is not None)
        sq = torch.as_tensor(sq, device=self.device, dtype=torch.float32)
        dist.all_reduce(sq, group=self.pp_group)
        return sq.sqrt()

    def report(self, measured_step_s: float | None = None) -> dict[str, Any]:
        """Stage balance: blocks, predicted time and memory per stage, bubble, step time."""
        times = [c.time_s for c in self.costs]
        per_stage = stage_costs(times, self.sizes)
        acts = stage_costs([float(c.activation_bytes) for c in self.costs], self.sizes)
        params = stage_costs([float(c.param_bytes) for c in self.costs], self.sizes)
        S, M = self.layout.stages, self.cfg.microbatches
        out: dict[str, Any] = {
            "stages": S, "replicas": self.layout.replicas, "microbatches": M,
            "schedule": self.cfg.schedule, "stage_sizes": self.sizes,
            "stage_time_s": per_stage, "stage_activation_bytes_per_microbatch": acts,
            "stage_param_bytes": params,
            "bubble_fraction": (S - 1) / (M + S - 1),
            "predicted_step_s": (M + S - 1) * max(per_stage),
            "imbalance": max(per_stage) / (sum(per_stage) / S) if sum(per_stage) else 1.0,
            "peak_rss_mb_this_rank": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        if measured_step_s is not None:
            out["measured_step_s"] = measured_step_s
        return out


def gather_full_state(engine: PipelineEngine) -> dict[str, torch.Tensor] | None:
    """The full model's state dict on rank 0 (None elsewhere). Call on all ranks."""
    import io

    buf = io.BytesIO()
    mine = engine.module.state_dict() if engine.layout.replica == 0 else {}
    torch.save({k: v.cpu() for k, v in mine.items()}, buf)
    blobs: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(blobs, buf.getvalue())
    if dist.get_rank() != 0:
        return None
    full: dict[str, torch.Tensor] = {}
    for b in blobs:
        full.update(torch.load(io.BytesIO(b), weights_only=True))
    return full
