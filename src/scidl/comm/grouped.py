"""``grouped``: static gradient groups from the observed backward order (Laanait et al. 2019).

DDP is asked for one bucket per parameter tensor, so its hooks fire in the order the
gradients become ready. For the first ``observe`` steps each bucket is allreduced on its
own while rank 0 records when each became ready; then every rank receives that one
observation (a single broadcast) and derives the same static schedule: consecutive
buckets are fused into a group until the group reaches ``group_mb`` or the next gradient
arrived more than ``group_gap_ms`` later (a long compute gap: start what is ready now).
From then on each group is one fused allreduce, launched by the hook of its last
member; no rank coordinates the others at run time. Group sizes and per-group time are
in ``report()``.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist
from torch.futures import Future

from scidl.comm.accounting import broadcast_bytes
from scidl.comm.base import CommStrategy
from scidl.comm.buckets import Bucket

_OBSERVE_STEPS = 2  # DDP rebuilds its buckets once, after step 1; observe after that


def plan_groups(nbytes: list[int], ready_s: list[float], cap_bytes: float, gap_s: float
                ) -> list[int]:
    """Group id of each bucket (in bucket order) for the static schedule.

    A group closes when adding the next bucket would exceed ``cap_bytes`` or when the next
    bucket became ready more than ``gap_s`` after the current one.
    """
    groups, gid, size = [], 0, 0
    for i, b in enumerate(nbytes):
        if i > 0 and (size + b > cap_bytes or ready_s[i] - ready_s[i - 1] > gap_s):
            gid, size = gid + 1, 0
        groups.append(gid)
        size += b
    return groups


class GroupedAllreduce(CommStrategy):
    """One fused allreduce per statically planned group of gradients."""

    name = "grouped"
    description = "static groups from the observed backward order, one fused allreduce each"
    nonfinite_agreed = True
    wire_settings = ("group_mb",)

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._ready: dict[int, tuple[float, int]] = {}
        self._t0: float | None = None
        self.groups: list[int] | None = None
        self._pending: list[tuple[Bucket, Future[torch.Tensor]]] = []
        self.group_bytes: list[int] = []
        self._device = torch.device("cpu")

    @classmethod
    def fusion_bytes(cls, cfg: Any) -> float | None:
        """Groups of up to ``comm.group_mb`` (also split at backward gaps, not modelled)."""
        return float(cfg.group_mb * 2**20)

    def ddp_kwargs(self) -> dict[str, Any]:
        # A cap below any tensor's size gives one DDP bucket per parameter tensor.
        return {"bucket_cap_mb": 1e-6}

    def reduce(self, bucket: Bucket) -> Future[torch.Tensor]:
        now = time.perf_counter()
        self._device = bucket.buffer.device
        if self._t0 is None or bucket.index == 0:
            self._t0 = now
        if self.groups is None or bucket.index >= len(self.groups):
            self._ready[bucket.index] = (now - self._t0, bucket.buffer.numel() * 4)
            bucket.buffer.div_(self.world)
            return self.allreduce(bucket.buffer)
        return self._grouped(bucket)

    def _grouped(self, bucket: Bucket) -> Future[torch.Tensor]:
        fut: Future[torch.Tensor] = Future()
        self._pending.append((bucket, fut))
        gid = self.groups[bucket.index]  # type: ignore[index]
        last = bucket.is_last or self.groups[bucket.index + 1] != gid  # type: ignore[index]
        if last:
            members, self._pending = self._pending, []
            flat = torch.cat([b.buffer for b, _ in members]).div_(self.world)

            def scatter(f: Future[torch.Tensor]) -> torch.Tensor:
                out, start = f.value(), 0
                for b, mf in members:
                    n = b.buffer.numel()
                    b.buffer.copy_(out[start : start + n])
                    start += n
                    mf.set_result(b.buffer)
                return out

            self.allreduce(flat, op=f"group{gid}").then(scatter)
        return fut

    def end_step(self) -> dict[str, float]:
        if self.groups is None and self.step + 1 == _OBSERVE_STEPS:
            self._plan()  # its one broadcast is accounted to the observing step
        return super().end_step()

    def _plan(self) -> None:
        """Agree on rank 0's observation (one broadcast, all ranks) and plan the groups."""
        n = len(self._ready)
        obs = torch.zeros(2, n, dtype=torch.float64, device=self._device)
        for i, (t, b) in self._ready.items():
            obs[0, i], obs[1, i] = t, b
        nbytes = obs.numel() * 8
        self.counters.record("broadcast", broadcast_bytes(nbytes, self.world, self.rank, 0, self.backend),
                             0 if self.rank == 0 else nbytes)
        root = 0 if self.group is None else dist.get_global_rank(self.group, 0)
        dist.broadcast(obs, src=root, group=self.group)
        sizes = [int(b) for b in obs[1].tolist()]
        self.groups = plan_groups(sizes, obs[0].tolist(), self.cfg.group_mb * 2**20,
                                  self.cfg.group_gap_ms / 1000.0)
        self.group_bytes = [0] * (max(self.groups) + 1 if self.groups else 0)
        for g, b in zip(self.groups, sizes, strict=True):
            self.group_bytes[g] += b

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "groups": self.groups, "group_bytes": self.group_bytes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.groups = state.get("groups")
        self.group_bytes = list(state.get("group_bytes") or [])

    def report(self) -> dict[str, Any]:
        out = super().report()
        out["group_bytes"] = self.group_bytes
        out["group_seconds"] = {
            k: v["seconds"] / max(v["calls"], 1)
            for k, v in self.counters.by_op.items() if k.startswith("group")
        }
        return out
