"""``dense``: DDP's bucketed allreduce, overlapped with the backward pass, with accounting."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from scidl.comm.accounting import ring_allreduce_bytes
from scidl.comm.base import CommStrategy


class DenseAllreduce(CommStrategy):
    """Average gradients with one allreduce per DDP bucket (``bucket_cap_mb``)."""

    name = "dense"
    description = "bucketed dense allreduce (DDP), bucket size configurable"

    def install(self, ddp_model: DDP, group: dist.ProcessGroup | None = None) -> None:
        world = dist.get_world_size(group)

        def hook(state: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
            buf = bucket.buffer()
            nbytes = ring_allreduce_bytes(buf.numel() * buf.element_size(), world)
            start = time.perf_counter()
            buf.div_(world)
            fut = dist.all_reduce(buf, group=group, async_op=True).get_future()

            def done(f: torch.futures.Future[Any]) -> torch.Tensor:
                self.counters.record("allreduce", nbytes, nbytes, time.perf_counter() - start)
                return f.value()[0]

            return fut.then(done)

        ddp_model.register_comm_hook(None, hook)
