"""``topk``: sparse allreduce of the top-k gradient entries with error feedback.

Per bucket of n entries on each of p ranks (SparCML, Renggli et al. SC'19; Deep
Gradient Compression, Lin et al. ICLR'18):

    a = g + e                              (error feedback: e is this rank's residual)
    S = ∪_i top-k_i(|a_i|)                 (per parameter i, k_i = ⌈density·n_i⌉; exact,
                                            or a sampled threshold for big tensors)
    e ← a − a_S                            (what was not sent waits for the next step)
    ḡ = (1/p)·Σ_r a_S^(r)                  (all-gather of (int32 index, value) pairs)

Mass is conserved exactly: sent + new residual = gradient + old residual (with fp16
values the rounding error of each sent value stays in the residual too).

Selection is per parameter inside the bucket, so the result does not depend on how DDP
buckets the parameters (it re-buckets after step 1 and after every restart).
Protocol, identical on every rank: (1) if the rule p·k·(1+s_idx/s_val) > 2n already
holds for the planned k, allreduce a densely (nothing is selected); (2) otherwise select,
all-gather the p (count, finite) pairs (16 bytes each), and if the largest count c_max makes the rule
hold, allreduce densely; (3) else all-gather each rank's indices and values padded to
c_max and sum them locally. The first ``warmup_steps`` steps are plain dense.
Non-finite gradients: the all-gather of step (2) carries each rank's finiteness with
its count, so every rank takes the same path; if any rank's bucket is NaN/Inf, every
rank returns a NaN bucket (the trainer skips the step on all ranks) and zeroes the
residual. Dense paths pass a NaN through the allreduce to every rank;
``on_skipped_step`` clears every residual.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.futures import Future
from torch.nn.parallel import DistributedDataParallel as DDP

from scidl.comm.base import CommStrategy, completed
from scidl.comm.buckets import Bucket, FlatStore
from scidl.comm.sparse import (
    INDEX_BYTES,
    pack,
    prefer_dense,
    segments_k,
    select_segments,
    unpack_sum,
)
from scidl.comm.wire import Collective, Shape, numel_of

COUNT_BYTES = 16  # each rank's (count, non-finite) pair: two int64


def value_bytes(cfg: Any) -> int:
    """Wire bytes of one sent value (``comm.value_dtype``)."""
    return 2 if cfg.value_dtype == "fp16" else 4


class TopK(CommStrategy):
    """Top-k sparsified allreduce with per-rank error feedback and a dense switch."""

    name = "topk"
    description = "top-k sparse all-gather with error feedback and sparse→dense switch"
    nonfinite_agreed = True
    wire_settings = ("density", "value_dtype")

    @classmethod
    def wire(cls, cfg: Any, numel: int, world: int,
             shapes: Sequence[Shape] | None = None) -> list[Collective]:
        """k = Σ⌈density·n_i⌉ per parameter (one segment when shapes are unknown): the
        (count, finite) all-gather, then k (index, value) pairs from every rank; or one
        dense allreduce in the value dtype when the switch rule prefers it."""
        vb = value_bytes(cfg)
        sizes = [numel_of(s) for s in shapes] if shapes else [numel]
        k = segments_k([(0, n) for n in sizes], cfg.density)
        if prefer_dense(world, k, numel, vb):
            return [Collective("allreduce", vb * numel)]
        return [Collective("allgather", COUNT_BYTES),
                Collective("allgather", k * (INDEX_BYTES + vb))]

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.residuals = FlatStore()
        self.gen = torch.Generator()
        self.wire_dtype = torch.float16 if cfg.value_dtype == "fp16" else torch.float32
        self.modes: dict[int, str] = {}
        self.sparse_calls = 0
        self.dense_calls = 0
        self.sent_values = 0
        self.bucket_values = 0

    def setup(self, ddp_model: DDP | None, group: dist.ProcessGroup | None) -> None:
        super().setup(ddp_model, group)
        self.gen.manual_seed(self.cfg.seed * 7919 + self.rank)

    def reduce(self, bucket: Bucket) -> Future[torch.Tensor]:
        buf = bucket.buffer
        n = buf.numel()
        if self.step < self.cfg.warmup_steps:  # a NaN anywhere reaches every rank
            return self._dense(bucket, buf, residual=None, mode="warmup")
        ef = self.cfg.error_feedback
        acc = self.residuals.get(bucket).add_(buf) if ef else buf
        vb = self.wire_dtype.itemsize
        segments = [(s, m) for _, s, m in bucket.offsets()] or [(0, n)]
        k = segments_k(segments, self.cfg.density)
        if prefer_dense(self.world, k, n, vb):  # the same on every rank: sizes only
            return self._dense(bucket, acc, residual=acc if ef else None, mode="dense")
        # Which path to take depends on values (counts, finiteness): every rank learns
        # every rank's (count, finite) in one small all-gather before choosing.
        finite = bool(torch.isfinite(acc.sum()))
        idx = (select_segments(acc, segments, self.cfg.density, self.cfg.selection,
                               self.cfg.exact_max_numel, self.cfg.sample_fraction, self.gen)
               if finite else acc.new_zeros(0, dtype=torch.int64))
        info = torch.zeros(2 * self.world, dtype=torch.int64, device=buf.device)
        mine = torch.tensor([idx.numel(), int(not finite)], device=buf.device)
        self.wait(self.allgather(info, mine, op="allgather_counts"))
        rows = info.view(self.world, 2).tolist()
        if any(bad for _, bad in rows):  # some rank's gradient is NaN/Inf: skip the step
            self.modes[bucket.index] = "nonfinite"
            if ef:
                acc.zero_()
            return completed(buf.fill_(float("nan")))
        counts = [c for c, _ in rows]
        cap = max(counts)
        if prefer_dense(self.world, cap, n, vb):
            return self._dense(bucket, acc, residual=acc if ef else None, mode="dense")
        vals = acc[idx].to(self.wire_dtype)
        if ef and self.wire_dtype == acc.dtype:  # e ← a − sent: zero where sent
            acc.index_fill_(0, idx, 0.0)
        elif ef:  # fp16 values: the rounding error of each sent value stays in e
            acc.index_put_((idx,), acc[idx] - vals.to(acc.dtype))
        payload = pack(idx, vals, cap)
        gathered = torch.empty(payload.numel() * self.world, dtype=torch.uint8, device=buf.device)
        self.modes[bucket.index] = "sparse"
        self.sparse_calls += 1
        self.sent_values += idx.numel()
        self.bucket_values += n

        def combine(f: Future[torch.Tensor]) -> torch.Tensor:
            unpack_sum(f.value(), counts, cap, self.wire_dtype, out=buf)
            return buf.div_(self.world)

        return self.allgather(gathered, payload, op="allgather_sparse").then(combine)

    def _dense(self, bucket: Bucket, acc: torch.Tensor, residual: torch.Tensor | None,
               mode: str) -> Future[torch.Tensor]:
        """Allreduce all of ``acc`` (in the wire dtype) into the bucket; residual ← rounding."""
        buf = bucket.buffer
        self.modes[bucket.index] = mode
        self.dense_calls += 1
        self.sent_values += acc.numel()
        self.bucket_values += acc.numel()
        if self.wire_dtype == torch.float32:
            if acc is not buf:
                buf.copy_(acc)
            if residual is not None:
                residual.zero_()
            buf.div_(self.world)
            return self.allreduce(buf, op="allreduce_dense")
        low = acc.div(self.world).to(self.wire_dtype)
        if residual is not None:  # keep the cast's rounding error: e = a − p·fp16(a/p)
            residual.sub_(low.to(acc.dtype).mul_(self.world))

        def back(f: Future[torch.Tensor]) -> torch.Tensor:
            out = buf.copy_(f.value())
            if residual is not None and not bool(torch.isfinite(out.sum())):
                residual.zero_()  # the step will be skipped: keep no NaN (same on all ranks)
            return out

        return self.allreduce(low, op="allreduce_dense").then(back)

    def reset_state(self) -> None:
        self.residuals.clear()

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "residuals": self._by_position(self.residuals.pieces()),
                "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.residuals.load_pieces(self._by_id(state.get("residuals", {})))
        if "gen" in state:
            self.gen.set_state(state["gen"])

    def report(self) -> dict[str, Any]:
        out = super().report()
        out.update(
            density=self.cfg.density,
            sparse_calls=self.sparse_calls,
            dense_calls=self.dense_calls,
            sent_fraction=self.sent_values / max(self.bucket_values, 1),
        )
        return out
