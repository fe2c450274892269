"""What a strategy puts on the wire for one gradient bucket, described without running it.

Every strategy answers :meth:`scidl.comm.CommStrategy.wire`: the collectives it issues,
in steady state (after any warm-up), for one bucket of ``numel`` fp32 gradient entries
on ``world`` ranks, from its own settings (and, where it matters, the shapes of the
parameters in the bucket). The byte counters (:mod:`scidl.comm.accounting`) and the
cost model (:mod:`scidl.scaling.costmodel`) both read these descriptions, so neither
keeps its own table of strategies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from scidl.comm.accounting import (
    allgather_bytes,
    alltoall_bytes,
    reduce_scatter_bytes,
    ring_allreduce_bytes,
)

__all__ = ["Collective", "Shape", "bytes_sent"]

Shape = Sequence[int]
Op = Literal["allreduce", "allgather", "reduce_scatter", "alltoall"]


@dataclass(frozen=True)
class Collective:
    """One collective over the data-parallel group.

    Attributes:
        op: ``allreduce``, ``allgather``, ``reduce_scatter`` or ``alltoall``.
        nbytes: payload bytes as the accounting counts them: the buffer of an allreduce,
            each rank's block of an allgather, the whole input of a reduce-scatter, the
            whole input of an all-to-all (spread evenly over the p destinations).
        algorithm: the allreduce algorithm the strategy runs whatever the machine's
            default (``two-level`` for ``hierarchical``); None: the machine's.
        dtype: the element type on the wire (``float16`` for ``fp16``): a reduction's
            cost per byte depends on it.
    """

    op: Op
    nbytes: float
    algorithm: str | None = None
    dtype: str = "float32"

    @property
    def key(self) -> str:
        """The name its measured rates go by (``allreduce``, ``allreduce:float16``; see
        :func:`scidl.scaling.collectives.split_op`)."""
        return self.op if self.dtype == "float32" else f"{self.op}:{self.dtype}"

    def bytes_sent(self, world: int, backend: str | None = None) -> float:
        """Bytes one rank sends in this collective (the formulas of the accounting)."""
        if self.op == "allreduce":
            return ring_allreduce_bytes(self.nbytes, world, backend)
        if self.op == "allgather":
            return allgather_bytes(self.nbytes, world, backend)
        if self.op == "alltoall":
            return alltoall_bytes(self.nbytes, world)
        return reduce_scatter_bytes(self.nbytes, world, backend)


def bytes_sent(plan: Iterable[Collective], world: int, backend: str | None = None) -> float:
    """Bytes one rank sends for a whole plan."""
    return sum(c.bytes_sent(world, backend) for c in plan)


def numel_of(shape: Shape) -> int:
    """Entries of a tensor of ``shape``."""
    n = 1
    for d in shape:
        n *= d
    return n
