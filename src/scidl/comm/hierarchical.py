"""``hierarchical``: two-level allreduce (Kurth et al. SC18; Horovod's hierarchical mode).

Three phases per bucket of n entries on N nodes of g ranks each (p = N·g):

1. reduce-scatter inside the node: each rank owns 1/g of the node's sum
   (sends (g-1)/g·n values);
2. allreduce of that shard across nodes, among the ranks with the same local index
   (sends 2(N-1)/N·n/g values);
3. allgather inside the node (sends (g-1)/g·n values).

Only phase 2 crosses nodes: n·2(N-1)/(N·g) values per rank instead of 2(p-1)/p·n.

Where the nodes are. Unset ``comm.ranks_per_node`` means the launcher's real node
boundary: global rank r sits on node r // ``LOCAL_WORLD_SIZE`` (torch elastic, torchrun,
Slurm and ``scidl train --nnodes``/``--cluster`` number each node's ranks
consecutively), so the intra-node groups are the group's members on one node and the
inter-node groups join the members with the same position on each node, also when the
strategy reduces over a sub-group (a data-parallel group of a pipeline layout). On one
machine, ``ranks_per_node`` declares virtual nodes (consecutive members of the group)
so the path is testable without a cluster.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.futures import Future
from torch.nn.parallel import DistributedDataParallel as DDP

from scidl.comm.accounting import allgather_bytes, reduce_scatter_bytes, ring_allreduce_bytes
from scidl.comm.base import CommStrategy, completed
from scidl.comm.buckets import Bucket
from scidl.comm.wire import Shape


def physical_layout(ranks: list[int], local_world: int) -> tuple[list[list[int]], list[list[int]]]:
    """Intra-node lists (the members of ``ranks`` on each node, node of global rank r =
    r // ``local_world``) and inter-node lists (the members at the same position on
    each node); every node must hold the same number of members."""
    if local_world < 1:
        raise ValueError(f"LOCAL_WORLD_SIZE={local_world} must be at least 1")
    by_node: dict[int, list[int]] = {}
    for r in ranks:
        by_node.setdefault(r // local_world, []).append(r)
    intra = [by_node[n] for n in sorted(by_node)]
    sizes = {len(m) for m in intra}
    if len(sizes) != 1:
        raise ValueError(f"hierarchical: the group's ranks {ranks} are spread unevenly over "
                         f"the nodes ({[len(m) for m in intra]} per node); set "
                         "comm.ranks_per_node or use another strategy")
    per_node = sizes.pop()
    inter = [[m[j] for m in intra] for j in range(per_node)]
    return intra, inter


def node_layout(ranks: list[int], per_node: int) -> tuple[list[list[int]], list[list[int]]]:
    """Intra-node rank lists (consecutive ranks) and inter-node lists (same local index)."""
    if per_node < 1 or len(ranks) % per_node:
        raise ValueError(
            f"comm.ranks_per_node={per_node} must divide the number of ranks ({len(ranks)})"
        )
    intra = [ranks[i : i + per_node] for i in range(0, len(ranks), per_node)]
    inter = [ranks[j::per_node] for j in range(per_node)]
    return intra, inter


class HierarchicalAllreduce(CommStrategy):
    """Reduce-scatter in the node → allreduce across nodes → allgather in the node."""

    name = "hierarchical"
    description = "two-level allreduce (intra-node reduce-scatter/allgather, inter-node allreduce)"
    nonfinite_agreed = True

    @classmethod
    def allreduce_algorithm(cls, cfg: Any) -> str | None:
        return "two-level"

    @classmethod
    def wire_bytes(cls, cfg: Any, numel: int, world: int,
                   shapes: Sequence[Shape] | None = None, backend: str | None = None) -> float:
        """The three phases on g = ``comm.ranks_per_node`` (default: one node) ranks."""
        g = min(cfg.ranks_per_node or world, world)
        if world <= 1:
            return 0
        if g <= 1:  # one rank per node: a flat allreduce across nodes
            return ring_allreduce_bytes(4 * numel, world, backend)
        shard = 4 * math.ceil(numel / g)
        return (reduce_scatter_bytes(shard * g, g, backend)
                + ring_allreduce_bytes(shard, world // g, backend)
                + allgather_bytes(shard, g, backend))

    @classmethod
    def sync_points(cls, cfg: Any, numel: int, world: int, per_node: int = 1,
                    shapes: Sequence[Shape] | None = None) -> int:
        """Its phases, one after the other: reduce-scatter and allgather inside a node of
        g > 1 ranks (g = ``comm.ranks_per_node``, else ``per_node``), the allreduce
        across nodes when there are several."""
        if world <= 1:
            return 0
        g = max(1, min(cfg.ranks_per_node or per_node, world))
        return (2 if g > 1 else 0) + (1 if world > g else 0)

    def setup(self, ddp_model: DDP | None, group: dist.ProcessGroup | None) -> None:
        super().setup(ddp_model, group)
        ranks = dist.get_process_group_ranks(group or dist.group.WORLD)
        if self.cfg.ranks_per_node:  # declared (virtual) nodes
            intra, inter = node_layout(ranks, self.cfg.ranks_per_node)
        else:  # the launcher's nodes
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE") or dist.get_world_size())
            intra, inter = physical_layout(ranks, local_world)
        per_node = len(intra[0])
        me = ranks[self.rank]
        # new_group must be called by every rank for every group, in the same order.
        self.intra = self.inter = None
        for members in intra:
            g = dist.new_group(members)
            if me in members:
                self.intra = g
        for members in inter:
            g = dist.new_group(members)
            if me in members:
                self.inter = g
        self.g = per_node
        self.nodes = self.world // per_node

    def reduce(self, bucket: Bucket) -> Future[torch.Tensor]:
        buf = bucket.buffer
        n = buf.numel()
        buf.div_(self.world)
        if self.g == 1:  # one rank per node: a flat allreduce across nodes
            return self.allreduce(buf, group=self.inter, op="allreduce_inter", world=self.nodes)
        shard_n = math.ceil(n / self.g)
        padded = torch.zeros(shard_n * self.g, dtype=buf.dtype, device=buf.device)
        padded[:n] = buf
        shard = torch.empty(shard_n, dtype=buf.dtype, device=buf.device)
        self.wait(self.reduce_scatter(shard, padded, group=self.intra,
                                      op="reduce_scatter_intra", world=self.g))
        if self.nodes > 1:
            self.wait(self.allreduce(shard, group=self.inter, op="allreduce_inter",
                                     world=self.nodes))

        def back(f: Future[torch.Tensor]) -> torch.Tensor:
            return buf.copy_(f.value()[:n])

        fut = self.allgather(padded, shard, group=self.intra, op="allgather_intra", world=self.g)
        return fut.then(back) if n else completed(buf)
