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
c_max and sum them locally. The first ``warmup_steps`` steps are plain dense; then, with
``density_warmup_steps`` > 0, the density follows DGC's exponential warm-up (25 %,
6.25 %, … each for that many steps) down to ``density``.
With ``sparse_collective=rsag`` the selected pairs are summed by a sparse reduce-scatter
and an allgather of the reduced chunks instead of step (3); ``oktopk`` does the same
but each owner keeps only the ⌈k_i/p⌉ largest entries of its part of each parameter i
of the reduced sum (a global re-sparsification to ≈ k entries; each rank's dropped
contributions return to its own residual); ``auto`` chooses per bucket among the exact
reductions (all-gather, rsag, dense) from the α-β cost
(:mod:`scidl.comm.sparse_allreduce`). Subclasses (``dgc``, ``topk_adam``) change what is
accumulated and what the reduced sum becomes through the ``_accumulate``/``_sent``/
``_finish`` hooks; the protocol stays this one.
Non-finite gradients: the all-gather of step (2) carries each rank's finiteness with
its count, so every rank takes the same path; if any rank's bucket is NaN/Inf, every
rank returns a NaN bucket (the trainer skips the step on all ranks) and zeroes the
residual. Dense paths pass a NaN through the allreduce to every rank;
``on_skipped_step`` clears every residual.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.futures import Future
from torch.nn.parallel import DistributedDataParallel as DDP

from scidl.comm.base import CommStrategy, completed
from scidl.comm.buckets import Bucket, FlatStore
from scidl.comm.sparse import (
    INDEX_BYTES,
    k_for,
    pack,
    prefer_dense,
    select_segments,
    unpack_sum,
)
from scidl.comm.sparse_allreduce import (
    EXACT_ALGORITHMS,
    choose_algorithm,
    chunk_len,
    keep_largest,
    local_starts,
    owner_budget,
    pack_by_owner,
    plan_for,
    scatter_chunks,
    sum_received,
    warmup_density,
)
from scidl.comm.wire import Collective, Shape, bytes_sent, numel_of

COUNT_BYTES = 16  # each rank's (count, non-finite) pair: two int64


def value_bytes(cfg: Any) -> int:
    """Wire bytes of one sent value (``comm.value_dtype``)."""
    return 2 if cfg.value_dtype == "fp16" else 4


def plan_algorithm(cfg: Any, world: int, n: int, k: int, vb: int, fill: float,
                   budget: int | None = None) -> str:
    """How a bucket's k entries per rank are summed (identical on every rank): ``dense``
    where SparCML's byte rule prefers it, else ``comm.sparse_collective``; ``auto``: the
    cheapest of all-gather, rsag and dense under ``link_alpha``/``link_beta`` (the exact
    reductions; oktopk's re-sparsified sum only when ``sparse_collective=oktopk``)."""
    if cfg.sparse_collective == "auto":
        return choose_algorithm(world, n, k, vb, fill, cfg.link_alpha, cfg.link_beta,
                                allowed=EXACT_ALGORITHMS, budget=budget)
    if cfg.sparse_collective in ("rsag", "oktopk"):  # dense once the worst case is bigger
        algo = str(cfg.sparse_collective)
        worst = bytes_sent(plan_for(algo, world, n, k, vb, budget=budget), world)
        return "dense" if worst >= bytes_sent(plan_for("dense", world, n, k, vb), world) \
            else algo
    return "dense" if prefer_dense(world, k, n, vb) else "allgather"


class TopK(CommStrategy):
    """Top-k sparsified allreduce with per-rank error feedback and a dense switch."""

    name = "topk"
    description = "top-k sparse all-gather with error feedback and sparse→dense switch"
    nonfinite_agreed = True
    wire_settings = ("density", "value_dtype", "sparse_collective")

    @classmethod
    def wire(cls, cfg: Any, numel: int, world: int,
             shapes: Sequence[Shape] | None = None) -> list[Collective]:
        """k = Σ⌈density·n_i⌉ per parameter (one segment when shapes are unknown): the
        (count, finite) all-gather, then k (index, value) pairs from every rank; or one
        dense allreduce in the value dtype when the switch rule prefers it. ``rsag``,
        ``oktopk``: their four collectives for selections that do not overlap (the worst
        case)."""
        vb = value_bytes(cfg)
        sizes = [numel_of(s) for s in shapes] if shapes else [numel]
        ks = [k_for(n, cfg.density) for n in sizes]
        k, budget = sum(ks), owner_budget(ks, world)
        algo = plan_algorithm(cfg, world, numel, k, vb, fill=1.0, budget=budget)
        return plan_for(algo, world, numel, k, vb, budget=budget)

    @classmethod
    def compression_model(cls, cfg: Any) -> Callable[[], Any] | None:
        """Top-``density`` of each parameter with error feedback (None for the variants
        that apply the optimizer themselves: what they send is not a gradient)."""
        if cls.owns_optimizer_state is not None:
            return None
        from scidl.comm.fidelity import EFCompressor

        density = float(cfg.density)
        return lambda: EFCompressor("topk", density=density)

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.residuals = FlatStore()
        self.gen = torch.Generator()
        self.wire_dtype = torch.float16 if cfg.value_dtype == "fp16" else torch.float32
        self.modes: dict[int, str] = {}
        self.fill: dict[int, float] = {}  # U/(p·k) of each bucket's last sparse sum
        self.kept: dict[int, int] = {}  # oktopk: entries of the sum kept, last step
        self.sparse_calls = 0
        self.dense_calls = 0
        self.sent_values = 0
        self.bucket_values = 0

    def setup(self, ddp_model: DDP | None, group: dist.ProcessGroup | None) -> None:
        super().setup(ddp_model, group)
        self.gen.manual_seed(self.cfg.seed * 7919 + self.rank)

    def density_now(self) -> float:
        """This step's density: ``density`` after DGC's exponential warm-up."""
        return warmup_density(self.cfg.density, self.step - self._dense_steps(),
                              self.cfg.density_warmup_steps)

    def _dense_steps(self) -> int:
        """Steps reduced densely (uncompressed) at the start."""
        return self.cfg.warmup_steps

    def steady_after(self) -> int:
        """The dense steps, then DGC's density warm-up until its stage reaches ``density``."""
        ramp, stage = 0, int(self.cfg.density_warmup_steps)
        if stage > 0:
            while warmup_density(self.cfg.density, ramp, stage) > self.cfg.density:
                ramp += stage
        return int(self._dense_steps()) + ramp

    # ------------------------------------------------------------------ subclass hooks
    def _keeps_residual(self) -> bool:
        return bool(self.cfg.error_feedback)

    def _accumulate(self, bucket: Bucket) -> torch.Tensor:
        """The tensor to sparsify (it holds the residual after the call when kept)."""
        if self._keeps_residual():
            return self.residuals.get(bucket).add_(bucket.buffer)
        return bucket.buffer

    def _sent(self, bucket: Bucket, idx: torch.Tensor | None) -> None:
        """``idx`` (None: everything) of the accumulator was sent this step."""
        return None

    def _nonfinite(self, bucket: Bucket) -> None:
        """Some rank's bucket is NaN/Inf: drop this bucket's state (all ranks)."""
        if self._keeps_residual():
            self.residuals.get(bucket).zero_()

    def _finish(self, bucket: Bucket, out: torch.Tensor) -> torch.Tensor:
        """The averaged sum of what was sent → the bucket's result (identity here)."""
        return out

    def _dense_warmup(self, bucket: Bucket) -> Future[torch.Tensor]:
        return self._dense(bucket, bucket.buffer, residual=None, mode="warmup")

    # ------------------------------------------------------------------ protocol
    def reduce(self, bucket: Bucket) -> Future[torch.Tensor]:
        fut = self._reduce(bucket)
        if type(self)._finish is TopK._finish:
            return fut
        return fut.then(lambda f: self._finish(bucket, f.value()))

    def _reduce(self, bucket: Bucket) -> Future[torch.Tensor]:
        buf = bucket.buffer
        n = buf.numel()
        if self.step < self._dense_steps():  # a NaN anywhere reaches every rank
            return self._dense_warmup(bucket)
        ef = self._keeps_residual()
        acc = self._accumulate(bucket)
        vb = self.wire_dtype.itemsize
        segments = [(s, m) for _, s, m in bucket.offsets()] or [(0, n)]
        density = self.density_now()
        ks = [k_for(m, density) for _, m in segments]
        k, budget = sum(ks), owner_budget(ks, self.world)
        # the same on every rank: sizes, settings and last step's (shared) fill only
        algo = plan_algorithm(self.cfg, self.world, n, k, vb,
                              self.fill.get(bucket.index, 1.0), budget)
        if algo == "dense":
            return self._dense(bucket, acc, residual=acc if ef else None, mode="dense")
        # Which path to take depends on values (counts, finiteness): every rank learns
        # every rank's (count, finite) in one small all-gather before choosing.
        finite = bool(torch.isfinite(acc.sum()))
        idx = (select_segments(acc, segments, density, self.cfg.selection,
                               self.cfg.exact_max_numel, self.cfg.sample_fraction, self.gen)
               if finite else acc.new_zeros(0, dtype=torch.int64))
        if algo in ("rsag", "oktopk"):
            return self._rsag(bucket, acc, idx, finite, ef,
                              segments if algo == "oktopk" else None, density)
        info = torch.zeros(2 * self.world, dtype=torch.int64, device=buf.device)
        mine = torch.tensor([idx.numel(), int(not finite)], device=buf.device)
        self.wait(self.allgather(info, mine, op="allgather_counts"))
        rows = info.view(self.world, 2).tolist()
        if any(bad for _, bad in rows):  # some rank's gradient is NaN/Inf: skip the step
            return self._skip(bucket)
        counts = [c for c, _ in rows]
        cap = max(counts)
        if prefer_dense(self.world, cap, n, vb):
            return self._dense(bucket, acc, residual=acc if ef else None, mode="dense")
        vals = self._take(acc, idx, ef)
        self._sent(bucket, idx)
        payload = pack(idx, vals, cap)
        gathered = torch.empty(payload.numel() * self.world, dtype=torch.uint8, device=buf.device)
        self._count_sparse(bucket, "sparse", idx.numel(), n)
        total = max(sum(counts), 1)

        def combine(f: Future[torch.Tensor]) -> torch.Tensor:
            unpack_sum(f.value(), counts, cap, self.wire_dtype, out=buf)
            self.fill[bucket.index] = int(torch.count_nonzero(buf)) / total
            return buf.div_(self.world)

        return self.allgather(gathered, payload, op="allgather_sparse").then(combine)

    def _take(self, acc: torch.Tensor, idx: torch.Tensor, ef: bool) -> torch.Tensor:
        """The values sent at ``idx`` (wire dtype); the residual keeps what was not sent."""
        vals = acc[idx].to(self.wire_dtype)
        if ef and self.wire_dtype == acc.dtype:  # e ← a − sent: zero where sent
            acc.index_fill_(0, idx, 0.0)
        elif ef:  # fp16 values: the rounding error of each sent value stays in e
            acc.index_put_((idx,), acc[idx] - vals.to(acc.dtype))
        return vals

    def _count_sparse(self, bucket: Bucket, mode: str, sent: int, n: int) -> None:
        self.modes[bucket.index] = mode
        self.sparse_calls += 1
        self.sent_values += sent
        self.bucket_values += n

    def _skip(self, bucket: Bucket) -> Future[torch.Tensor]:
        self.modes[bucket.index] = "nonfinite"
        self._nonfinite(bucket)
        return completed(bucket.buffer.fill_(float("nan")))

    def _rsag(self, bucket: Bucket, acc: torch.Tensor, idx: torch.Tensor, finite: bool,
              ef: bool, segments: list[tuple[int, int]] | None = None,
              density: float = 1.0) -> Future[torch.Tensor]:
        """Sparse reduce-scatter to each entry's owner (i mod p), then an allgather of the
        reduced chunks, sparse or dense (:mod:`scidl.comm.sparse_allreduce`). With the
        bucket's ``segments`` (``oktopk``), each owner keeps only the ⌈k_i/p⌉ largest
        reduced entries of each parameter i, and every rank returns its sent values at
        the dropped indices to its residual."""
        oktopk = segments is not None
        buf = bucket.buffer
        n, p, me = buf.numel(), self.world, self.rank
        dev = buf.device
        vb = self.wire_dtype.itemsize
        pair = INDEX_BYTES + vb
        vals = acc[idx].to(self.wire_dtype)  # taken from the residual once all agree
        payload, counts = pack_by_owner(idx, vals, p)
        info = torch.zeros(p * (p + 1), dtype=torch.int64, device=dev)
        mine = torch.tensor([*counts, int(not finite)], dtype=torch.int64, device=dev)
        self.wait(self.allgather(info, mine, op="allgather_counts"))
        rows = info.view(p, p + 1).tolist()
        if any(r[p] for r in rows):  # some rank's gradient is NaN/Inf: skip the step
            return self._skip(bucket)
        self._take(acc, idx, ef)
        mode = "oktopk" if oktopk else "rsag"
        if not oktopk:
            self._sent(bucket, idx)
        self._count_sparse(bucket, mode, idx.numel(), n)
        recv_counts = [r[me] for r in rows]
        recv = torch.empty(sum(recv_counts) * pair, dtype=torch.uint8, device=dev)
        out_splits = [c * pair for c in recv_counts]
        in_splits = [c * pair for c in counts]
        nbytes = sum(in_splits) - in_splits[me]
        self.counters.record("alltoall_sparse", nbytes, sum(out_splits) - out_splits[me])
        work = dist.all_to_all_single(recv, payload, out_splits, in_splits, group=self.group,
                                      async_op=True)
        self.wait(self._timed(work, "alltoall_sparse", recv))
        length = chunk_len(n, p, me)
        chunk, pos = sum_received(recv, recv_counts, length, self.wire_dtype)
        filled_mine = pos.numel()
        if segments is not None:  # oktopk: the largest ⌈k_i/p⌉ of each parameter i
            starts = local_starts(segments, p, me)
            pos = keep_largest(chunk, pos, starts,
                               [owner_budget(k_for(m, density), p) for _, m in segments])
        c2 = torch.zeros(p * (1 + oktopk), dtype=torch.int64, device=dev)
        mine2 = [filled_mine, pos.numel()] if oktopk else [filled_mine]
        self.wait(self.allgather(c2, torch.tensor(mine2, device=dev), op="allgather_counts"))
        rows2 = c2.view(p, -1).tolist()
        filled = [r[0] for r in rows2]
        sent_counts = [r[-1] for r in rows2]  # oktopk: the kept counts
        cap = max(sent_counts)
        width = math.ceil(n / p)
        dense = cap * pair >= width * vb  # then every owner sends its whole chunk
        drops = oktopk and not dense and sum(sent_counts) < sum(filled)
        if dense:
            block = torch.zeros(width * vb, dtype=torch.uint8, device=dev)
            block[: length * vb].view(self.wire_dtype)[:] = chunk.to(self.wire_dtype)
            self.modes[bucket.index] = f"{mode}_dense"
        else:
            block = pack(pos, chunk[pos].to(self.wire_dtype), cap)
        gathered = torch.empty(block.numel() * p, dtype=torch.uint8, device=dev)
        total = max(sum(sum(r[:p]) for r in rows), 1)
        self.fill[bucket.index] = sum(filled) / total

        self.kept[bucket.index] = sum(sent_counts) if not dense else sum(filled)

        def combine(f: Future[torch.Tensor]) -> torch.Tensor:
            scatter_chunks(f.value(), p, n, dense, sent_counts, width if dense else cap,
                           self.wire_dtype, out=buf)
            if oktopk:
                self._return_dropped(bucket, acc, idx, vals, buf, ef, drops)
            return buf.div_(p)

        return self.allgather(gathered, block, op="allgather_chunks").then(combine)

    def _return_dropped(self, bucket: Bucket, acc: torch.Tensor, idx: torch.Tensor,
                        vals: torch.Tensor, summed: torch.Tensor, ef: bool,
                        drops: bool) -> None:
        """``oktopk``, after the allgather (local work): of this rank's sent entries
        ``idx`` (values ``vals``), those the owners dropped — zero in the gathered sum
        ``summed`` — go back into this rank's residual ``acc``, so sent + residual is
        unchanged; ``_sent`` learns the entries that stayed sent."""
        if not drops:
            self._sent(bucket, idx)
            return
        kept = summed[idx] != 0  # a kept sum of exactly 0 counts as dropped: same mass
        if ef:
            dropped = ~kept
            acc.index_add_(0, idx[dropped], vals[dropped].to(acc.dtype))
        self._sent(bucket, idx[kept])

    def _dense(self, bucket: Bucket, acc: torch.Tensor, residual: torch.Tensor | None,
               mode: str) -> Future[torch.Tensor]:
        """Allreduce all of ``acc`` (in the wire dtype) into the bucket; residual ← rounding."""
        buf = bucket.buffer
        self.modes[bucket.index] = mode
        self.dense_calls += 1
        self.sent_values += acc.numel()
        self.bucket_values += acc.numel()
        if mode != "warmup":
            self._sent(bucket, None)
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
                "gen": self.gen.get_state(), "fill": dict(self.fill)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.residuals.load_pieces(self._by_id(state.get("residuals", {})))
        if "gen" in state:
            self.gen.set_state(state["gen"])
        self.fill = {int(b): float(f) for b, f in state.get("fill", {}).items()}

    def report(self) -> dict[str, Any]:
        out = super().report()
        out.update(
            density=self.cfg.density,
            sparse_calls=self.sparse_calls,
            dense_calls=self.dense_calls,
            sent_fraction=self.sent_values / max(self.bucket_values, 1),
        )
        return out
