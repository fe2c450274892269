"""``quant``: 8- or 4-bit integer gradients, reduced in two phases with error feedback.

Low-precision communication of gradients for data parallelism, with a scale per block
of entries: Dettmers, "8-Bit Approximations for Parallelism in Deep Learning", ICLR
2016 (8-bit gradients between GPUs without loss of accuracy); block-wise absmax scales
as in Dettmers et al., "8-bit Optimizers via Block-wise Quantization", ICLR 2022. The
reduction is the two-phase compressed allreduce of 1-bit Adam (Tang et al., ICML 2021;
DeepSpeed's ``compressed_allreduce``), with error compensation on both sides:

For one bucket of n entries on p ranks, padded to p shards of s entries (s a multiple
of ``comm.quant_chunk`` = C):

1. **worker**: a_r = g_r + e_r (e_r: what rank r has not yet sent); every block of C
   entries of a_r is sent as integers q = round(a / σ) with σ = max|a| / (2^(b−1) − 1)
   (b = ``comm.quant_bits``) and its fp32 σ; e_r ← a_r − σ·q. An all-to-all gives the
   owner of each shard every rank's piece of it.
2. **server**: the owner of shard j sums the p dequantized pieces, m_j = (1/p)·Σ_r σ·q,
   adds its own residual, a_j = m_j + f_j, quantizes a_j the same way and keeps
   f_j ← a_j − σ·q. An allgather of the quantized shards gives every rank the whole
   result.

Bytes per rank: (p−1)/p·(n·b/8 + 4n/C) in each phase; ``dense``'s ring allreduce sends
2(p−1)/p·4n, so 8 bits send ≈ 4× fewer bytes and 4 bits ≈ 8× fewer, whatever p. Mass
is conserved: (1/p)·Σ_r (g_r + e_r − e_r′) + Σ_j (f_j − f_j′) is exactly the result.
Rounding is to the nearest integer; the residuals carry what rounding leaves to the
next step. Both residuals are kept bucket-long and move with their parameters when DDP
rebuilds its buckets or a checkpoint is restored; the part of a server residual that
then falls outside this rank's shard is added, times p, to the rank's own residual, so
it still reaches the result exactly once.

A NaN/Inf on any rank makes its block's σ non-finite; the owner's sum, its σ and, after
the allgather, every rank's result are then non-finite, so all ranks skip the step, and
no residual of that step is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.futures import Future

from scidl.comm.base import CommStrategy
from scidl.comm.buckets import Bucket, FlatStore
from scidl.comm.wire import Collective, Shape

__all__ = ["Quant", "block_bytes", "dequantize", "quantize", "shard_len"]


def shard_len(numel: int, world: int, chunk: int) -> int:
    """Entries per shard: ⌈numel / world⌉ rounded up to a whole number of blocks."""
    per = max(1, math.ceil(numel / world))
    return math.ceil(per / chunk) * chunk


def block_bytes(entries: int, bits: int, chunk: int) -> int:
    """Bytes of one quantized shard of ``entries`` (a multiple of ``chunk``): the
    integers plus one fp32 scale per block."""
    return entries * bits // 8 + 4 * (entries // chunk)


def quantize(x: torch.Tensor, bits: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (length a multiple of ``chunk``) as packed integers (uint8; 4 bits: two per
    byte) and one fp32 scale per block of ``chunk`` entries (largest magnitude ↦ the
    largest integer, round to nearest). A block of zeros gets scale 0; a non-finite
    block a non-finite scale."""
    qmax = 2 ** (bits - 1) - 1
    blocks = x.reshape(-1, chunk).float()
    # (a few passes over the bucket, in place where possible: fresh buffers the size of
    # the bucket cost page faults on every step)
    scale = blocks.abs().amax(dim=1).div_(qmax)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    y = blocks / safe[:, None]
    y.round_().clamp_(-qmax, qmax).add_(qmax + 1)  # 1 … 2·qmax+1: never negative
    u = y.to(torch.uint8).reshape(-1)
    if bits == 4:
        u = (u[0::2] << 4) | u[1::2]
    return u, scale


def dequantize(packed: torch.Tensor, scale: torch.Tensor, bits: int, chunk: int) -> torch.Tensor:
    """The fp32 values :func:`quantize` encoded."""
    qmax = 2 ** (bits - 1) - 1
    if bits == 4:
        u = torch.stack([packed >> 4, packed & 15], dim=1).reshape(-1)
    else:
        u = packed
    q = u.to(torch.float32).sub_(qmax + 1)
    q.view(-1, chunk).mul_(scale[:, None])
    return q


def _pack(u: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.cat([u, scale.contiguous().view(torch.uint8)])


def _unpack(block: torch.Tensor, entries: int, bits: int, chunk: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    nq = entries * bits // 8
    return block[:nq], block[nq:].contiguous().view(torch.float32)


class Quant(CommStrategy):
    """Chunk-scaled integer gradients, two-phase reduction with error feedback."""

    name = "quant"
    description = ("8/4-bit integer gradients with a scale per block, all-to-all then "
                   "allgather, error feedback on both sides")
    nonfinite_agreed = True
    wire_settings = ("quant_bits", "quant_chunk")

    @classmethod
    def wire(cls, cfg: Any, numel: int, world: int,
             shapes: Sequence[Shape] | None = None) -> list[Collective]:
        """An all-to-all of every rank's p quantized shards, then an allgather of the
        owners' quantized sums."""
        bits, chunk = int(cfg.quant_bits), int(cfg.quant_chunk)
        block = block_bytes(shard_len(numel, world, chunk), bits, chunk)
        return [Collective("alltoall", world * block, dtype="uint8"),
                Collective("allgather", block, dtype="uint8")]

    @classmethod
    def compression_model(cls, cfg: Any) -> Callable[[], Any] | None:
        """Block-scaled integers with the workers' and the owner's error feedback."""
        from scidl.comm.fidelity import EFCompressor

        bits, chunk = int(cfg.quant_bits), int(cfg.quant_chunk)
        return lambda: EFCompressor("quant", bits=bits, chunk=chunk)

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.bits, self.chunk = int(cfg.quant_bits), int(cfg.quant_chunk)
        self.worker = FlatStore()  # e_r, per bucket (moves with its parameters)
        self.server = FlatStore()  # f_j: bucket-long, zero outside this rank's shard
        self._pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.dense_bytes = 0
        self.sent_bytes = 0

    def steady_after(self) -> int:
        return int(self.cfg.warmup_steps)  # dense steps before the first quantized one

    def reduce(self, bucket: Bucket) -> Future[torch.Tensor]:
        buf = bucket.buffer
        n, p = buf.numel(), self.world
        if self.step < self.cfg.warmup_steps or p == 1:
            buf.div_(p)
            return self.allreduce(buf)
        s = shard_len(n, p, self.chunk)
        lo, hi = min(self.rank * s, n), min((self.rank + 1) * s, n)  # my shard's entries
        block = block_bytes(s, self.bits, self.chunk)
        ef = bool(self.cfg.error_feedback) and bool(bucket.layout)
        acc = buf.new_zeros(p * s, dtype=torch.float32)
        acc[:n] = buf
        if ef:
            res = self.worker.get(bucket)
            srv = self.server.get(bucket)
            # a server residual outside my shard (the buckets were rebuilt or restored):
            # sent as mine, times p, so the result still receives it exactly once
            res[:lo].add_(srv[:lo], alpha=p)
            res[hi:].add_(srv[hi:], alpha=p)
            srv[:lo] = 0
            srv[hi:] = 0
            acc[:n] += res
        u, scale = quantize(acc, self.bits, self.chunk)
        # every rank's shard j goes to rank j: rows of (integers, scales)
        qb = s * self.bits // 8
        send = torch.cat([u.view(p, qb), scale.contiguous().view(torch.uint8).view(p, -1)], 1)
        recv = torch.empty_like(send)
        self.counters.record("alltoall", (p - 1) * block, (p - 1) * block)
        work = torch.distributed.all_to_all_single(recv, send.reshape(-1), group=self.group,
                                                   async_op=True)
        self.wait(self._timed(work, "alltoall", recv))
        # server: the mean of the p pieces of my shard, plus my residual
        mean = dequantize(*_unpack(recv[0], s, self.bits, self.chunk), self.bits, self.chunk)
        for i in range(1, p):
            mean += dequantize(*_unpack(recv[i], s, self.bits, self.chunk), self.bits,
                               self.chunk)
        mean.div_(p)
        if ef:
            mean[:hi - lo] += self.server.get(bucket)[lo:hi]
        us, ss = quantize(mean, self.bits, self.chunk)
        if ef:  # what this step leaves unsent, committed once the result is known finite
            worker_left = acc[:n] - dequantize(u, scale, self.bits, self.chunk)[:n]
            server_left = (mean - dequantize(us, ss, self.bits, self.chunk))[:hi - lo]
            self._pending[bucket.index] = (worker_left, server_left)
        out = torch.empty(p * block, dtype=torch.uint8, device=buf.device)
        self.dense_bytes += 4 * n
        self.sent_bytes += 2 * block

        def finish(fut: Future[torch.Tensor]) -> torch.Tensor:
            rows = fut.value().view(p, block)
            whole = torch.cat([dequantize(*_unpack(rows[j], s, self.bits, self.chunk),
                                          self.bits, self.chunk) for j in range(p)])
            buf.copy_(whole[:n])
            left = self._pending.pop(bucket.index, None)
            if left is not None and bool(torch.isfinite(buf).all()):
                # (non-finite on some rank, the same on all: keep nothing of this step)
                self.worker.get(bucket).copy_(left[0])
                self.server.get(bucket)[lo:hi] = left[1]
            return buf

        return self.allgather(out, _pack(us, ss), op="allgather").then(finish)

    def reset_state(self) -> None:
        """Forget both residuals."""
        self.worker.clear()
        self.server.clear()
        self._pending.clear()

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "worker": self._by_position(self.worker.pieces()),
                "server": self._by_position(self.server.pieces())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.worker.load_pieces(self._by_id(state.get("worker", {})))
        self.server.load_pieces(self._by_id(state.get("server", {})))

    def report(self) -> dict[str, Any]:
        out = super().report()
        out["compression_ratio"] = self.dense_bytes / max(self.sent_bytes, 1)
        return out
