"""``dense``: one allreduce per DDP bucket, overlapped with the backward pass."""

from __future__ import annotations

import torch
from torch.futures import Future

from scidl.comm.base import CommStrategy
from scidl.comm.buckets import Bucket


class DenseAllreduce(CommStrategy):
    """Average gradients with one ring allreduce per DDP bucket (``bucket_cap_mb``).

    ḡ = (1/p)·Σ_r g_r; each rank sends and receives 2(p-1)/p·n·4 bytes per bucket of n
    fp32 entries. The division happens before the sum (same as DDP's default hook).
    Sparse gradients (``nn.Embedding(sparse=True)``) use the backend's sparse allreduce,
    as DDP does without a hook, and stay sparse.
    """

    name = "dense"
    description = "bucketed dense allreduce (DDP), bucket size configurable"
    native_sparse = True

    def reduce(self, bucket: Bucket) -> Future[torch.Tensor]:
        buf = bucket.buffer
        buf.div_(self.world)
        return self.allreduce(buf)
