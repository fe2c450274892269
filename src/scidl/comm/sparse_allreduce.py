"""Summing sparse contributions across ranks: the collectives, their bytes, the choice.

Two ways to form Σ_r a_S^(r) from each rank's k selected (index, value) pairs of an
n-entry bucket on p ranks, plus the dense fallback:

``allgather``
    every rank's pairs to every rank (one all-gather): (p−1)·k·(s_idx+s_val) bytes sent
    per rank — linear in p whatever the overlap of the selections.
``rsag`` (sparse reduce-scatter, then allgather; SparCML's split allreduce, Renggli et al.
    SC'19, §4; the same two phases as Ok-Topk, Li & Hoefler PPoPP'22)
    entry i belongs to rank i mod p (a strided partition, so entries that cluster in one
    layer still spread evenly). (1) an all-to-all sends each pair to its owner,
    (p−1)/p·k pairs per rank; (2) each owner sums what it received into its chunk of
    ⌈n/p⌉ entries; (3) an allgather of the reduced chunks, each sent sparse (c pairs) or
    dense (⌈n/p⌉ values) — whichever is smaller for the fullest chunk, the same choice on
    every rank. Bytes per rank: (p−1)/p·k·(s_idx+s_val) + (p−1)·min(c·(s_idx+s_val),
    ⌈n/p⌉·s_val), with c = U/p the distinct entries per chunk (U the size of the union of
    the selections). As the sum fills in (U → n) the second term stays below a dense
    allgather of n values, so the total is bounded by ≈ k·(s_idx+s_val) + n·s_val and does
    not grow as p·k; where the selections overlap (they do for real gradients) c ≪ k.
    With ``comm.value_dtype=fp16`` the owner's fp32 sum is cast to fp16 again for the
    allgather; that second rounding is not kept in any residual.
``oktopk`` (rsag with a global re-sparsification, after Ok-Topk, Li & Hoefler PPoPP'22,
    whose allgather phase moves only the global top-k)
    as ``rsag``, but before the allgather each owner keeps, in each parameter i of the
    bucket, only the ⌈k_i/p⌉ largest |values| of its reduced chunk (B = Σ_i ⌈k_i/p⌉ ≈ k/p
    per owner), so about k entries of the sum survive in total, whatever p and the
    overlap. Bytes per rank: (p−1)/p·k·(s_idx+s_val) + (p−1)·min(c, B)·(s_idx+s_val)
    + counts: O(k), independent of p. Ok-Topk picks the global top-k with a threshold
    estimated every τ' steps and rebalances its contiguous regions; here each owner's
    budget is its own threshold (the ⌈k_i/p⌉-th largest |value| of its part of
    parameter i): with the strided partition the p parts are alike, the kept counts ride
    on the chunk-count all-gather (no extra round), the bytes are exact, and — since
    parameter i's classes j mod p are the same whatever the bucket layout — the result
    does not depend on how DDP buckets the parameters. The entries the owners drop go
    back into error feedback where they came from: every rank adds its own sent values at
    the dropped indices back into its own residual (as Ok-Topk's SGD keeps in each
    worker's residual what was not globally selected), so on every rank sent + new
    residual = gradient + old residual, and Σ_r sent_r = p·(the result).
``dense``
    a ring allreduce of all n values: 2(p−1)/p·n·s_val.

``auto`` picks, per bucket, the cheapest of the four under the α-β model
(:mod:`scidl.scaling.costmodel`: α latency per message, β seconds per byte, from
``comm.link_alpha``/``comm.link_beta``), from sizes and the fill U/(p·k) observed on the
bucket's previous step — values every rank holds identically, so every rank takes the
same branch without a collective. ``allgather``, ``rsag`` and ``dense`` give the same
sum; ``oktopk`` gives a sparser one (≈ k entries in all, the rest kept in the residuals),
so where ``auto`` takes it the step sends less and applies less.
"""

from __future__ import annotations

import math

import torch

from scidl.comm.sparse import INDEX_BYTES
from scidl.comm.wire import Collective

#: each rank's block of the first all-gather of ``rsag``: p per-owner counts + finite flag
COUNT_ITEM_BYTES = 8
ALGORITHMS = ("allgather", "rsag", "oktopk", "dense")
#: what ``sparse_collective=auto`` chooses from: the reductions that sum exactly what the
#: ranks selected (oktopk drops part of the sum again, so it is used only when asked for)
EXACT_ALGORITHMS = ("allgather", "rsag", "dense")


def warmup_density(target: float, t: int, stage_steps: int, factor: float = 0.25) -> float:
    """Density at compressed step ``t`` of the exponential warm-up (DGC, Lin et al. 2018):
    factor^(1 + t // stage_steps) (25 %, 6.25 %, 1.5625 %, …), never below ``target``;
    ``stage_steps`` = 0: ``target`` throughout."""
    if stage_steps <= 0 or t < 0:
        return target
    return max(target, factor ** (1 + t // stage_steps))


def chunk_len(n: int, p: int, owner: int) -> int:
    """Entries of an n-entry bucket owned by rank ``owner``: those with i mod p = owner."""
    return max(0, (n - owner + p - 1) // p)


def rsag_wire(p: int, n: int, k: int, value_bytes: int, fill: float = 1.0) -> list[Collective]:
    """The collectives of ``rsag`` for k selected entries per rank; ``fill`` = U/(p·k), the
    union of the selections relative to no overlap (1: the worst case)."""
    pair = INDEX_BYTES + value_bytes
    per_chunk = min(math.ceil(fill * k), math.ceil(n / p))
    chunk_bytes = min(per_chunk * pair, math.ceil(n / p) * value_bytes)
    return [Collective("allgather", (p + 1) * COUNT_ITEM_BYTES),
            Collective("alltoall", k * pair),
            Collective("allgather", COUNT_ITEM_BYTES),
            Collective("allgather", chunk_bytes)]


def owner_budget(ks: list[int] | int, p: int) -> int:
    """``oktopk``: entries an owner keeps of its reduced chunk, Σ_i ⌈k_i/p⌉ over the
    bucket's parameters (k_i entries selected per rank in parameter i): ≈ k/p."""
    return sum(max(1, math.ceil(k / p)) for k in ([ks] if isinstance(ks, int) else ks))


def oktopk_wire(p: int, n: int, k: int, value_bytes: int, fill: float = 1.0,
                budget: int | None = None) -> list[Collective]:
    """The collectives of ``oktopk``: those of ``rsag`` (the chunk counts carry each
    owner's kept count too) with each reduced chunk cut to the owner's ``budget``
    (default ⌈k/p⌉), or sent dense where that is smaller."""
    pair = INDEX_BYTES + value_bytes
    width = math.ceil(n / p)
    budget = owner_budget(k, p) if budget is None else budget
    per_chunk = min(math.ceil(fill * k), budget, width)
    chunk_bytes = min(per_chunk * pair, width * value_bytes)
    return [Collective("allgather", (p + 1) * COUNT_ITEM_BYTES),
            Collective("alltoall", k * pair),
            Collective("allgather", 2 * COUNT_ITEM_BYTES),
            Collective("allgather", chunk_bytes)]


def local_starts(segments: list[tuple[int, int]], p: int, owner: int) -> list[int]:
    """Where each ``(start, n)`` segment of the bucket begins in ``owner``'s chunk (the
    entries i ≡ owner mod p, entry i at local position i // p)."""
    return [max(0, (start - owner + p - 1) // p) for start, _ in segments]


def keep_largest(chunk: torch.Tensor, pos: torch.Tensor, starts: list[int],
                 budgets: list[int]) -> torch.Tensor:
    """``oktopk``: of the filled positions ``pos`` (sorted) of an owner's reduced chunk,
    the ``budgets[j]`` with the largest |value| inside each segment j (local positions
    from ``starts[j]`` to the next start). Entry i of a parameter lies in the class
    i mod p of the parameter whatever the bucket layout, so the kept set does not depend
    on how DDP buckets the parameters."""
    edges = torch.tensor([*starts[1:], chunk.numel()], dtype=pos.dtype, device=pos.device)
    ends = torch.searchsorted(pos, edges).tolist()
    parts, lo = [], 0
    for hi, b in zip(ends, budgets, strict=True):
        seg = pos[lo:hi]
        if seg.numel() > b:
            seg = torch.sort(seg[torch.topk(chunk[seg].abs(), b, sorted=False).indices]).values
        parts.append(seg)
        lo = hi
    return torch.cat(parts) if parts else pos


def allgather_wire(k: int, value_bytes: int) -> list[Collective]:
    """The collectives of the flat all-gather: (count, finite) pairs, then k pairs each."""
    return [Collective("allgather", 16), Collective("allgather", k * (INDEX_BYTES + value_bytes))]


def dense_wire(n: int, value_bytes: int) -> list[Collective]:
    """One ring allreduce of all n values (in float16 where values travel in 2 bytes)."""
    return [Collective("allreduce", n * value_bytes,
                       dtype="float16" if value_bytes == 2 else "float32")]


def predicted_seconds(plan: list[Collective], p: int, alpha: float, beta: float) -> float:
    """α-β time of a plan on a flat network (ring allreduce and allgather; an all-to-all
    sends p−1 direct messages)."""
    from scidl.scaling.costmodel import (
        LinkCost,
        ring_allgather_time,
        ring_allreduce_time,
    )

    link = LinkCost(alpha, beta)
    total = 0.0
    for c in plan:
        if c.op == "allreduce":
            total += ring_allreduce_time(c.nbytes, p, link)
        elif c.op == "allgather":
            total += ring_allgather_time(c.nbytes * p, p, link)
        else:  # alltoall of c.nbytes per rank in all
            total += (p - 1) * alpha + c.bytes_sent(p) * beta
    return total


def plan_for(algorithm: str, p: int, n: int, k: int, value_bytes: int,
             fill: float = 1.0, budget: int | None = None) -> list[Collective]:
    """The collectives of ``algorithm`` for one bucket (``budget``: oktopk's entries kept
    per owner, default ⌈k/p⌉)."""
    if algorithm == "dense":
        return dense_wire(n, value_bytes)
    if algorithm == "rsag":
        return rsag_wire(p, n, k, value_bytes, fill)
    if algorithm == "oktopk":
        return oktopk_wire(p, n, k, value_bytes, fill, budget)
    return allgather_wire(k, value_bytes)


def choose_algorithm(p: int, n: int, k: int, value_bytes: int, fill: float, alpha: float,
                     beta: float, allowed: tuple[str, ...] = ALGORITHMS,
                     budget: int | None = None) -> str:
    """The cheapest of ``allowed`` under the α-β model (ties: the earlier one)."""
    costs = {a: predicted_seconds(plan_for(a, p, n, k, value_bytes, fill, budget), p,
                                  alpha, beta)
             for a in allowed}
    return min(allowed, key=lambda a: costs[a])


def pack_by_owner(idx: torch.Tensor, vals: torch.Tensor, p: int
                  ) -> tuple[torch.Tensor, list[int]]:
    """Bytes to send to each owner (i mod p), in owner order: per owner its int32 local
    positions i // p, then its values; and the pair count per owner."""
    owner = torch.remainder(idx, p)
    order = torch.argsort(owner, stable=True)
    idx, vals, owner = idx[order], vals[order], owner[order]
    counts = torch.bincount(owner, minlength=p).tolist()
    local = torch.div(idx, p, rounding_mode="floor").to(torch.int32)
    parts, start = [], 0
    for c in counts:
        parts.append(local[start : start + c].view(torch.uint8))
        parts.append(vals[start : start + c].contiguous().view(torch.uint8))
        start += c
    return torch.cat(parts), counts


def sum_received(recv: torch.Tensor, counts: list[int], length: int,
                 value_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum the pairs received from each rank (``counts[r]`` pairs from rank r) into a
    dense fp32 chunk of ``length`` entries; also return the positions that received any."""
    vb = torch.empty(0, dtype=value_dtype).element_size()
    chunk = torch.zeros(length, dtype=torch.float32, device=recv.device)
    hit = torch.zeros(length, dtype=torch.bool, device=recv.device)
    start = 0
    for c in counts:
        if c:
            pos = recv[start : start + c * INDEX_BYTES].view(torch.int32).long()
            start += c * INDEX_BYTES
            v = recv[start : start + c * vb].view(value_dtype)
            start += c * vb
            chunk.index_add_(0, pos, v.to(torch.float32))
            hit[pos] = True
    return chunk, torch.nonzero(hit, as_tuple=True)[0]


def scatter_chunks(gathered: torch.Tensor, p: int, n: int, dense: bool, counts: list[int],
                   cap: int, value_dtype: torch.dtype, out: torch.Tensor) -> torch.Tensor:
    """Write every owner's reduced chunk into ``out`` (entry j·p + r of owner r)."""
    vb = torch.empty(0, dtype=value_dtype).element_size()
    rows = gathered.view(p, -1)
    out.zero_()
    for r in range(p):
        length = chunk_len(n, p, r)
        if dense:
            vals = rows[r, : cap * vb].view(value_dtype)[:length]
            out[r::p] = vals.to(out.dtype)
            continue
        c = counts[r]
        if c:
            pos = rows[r, : cap * INDEX_BYTES].view(torch.int32)[:c].long()
            vals = rows[r, cap * INDEX_BYTES : cap * INDEX_BYTES + c * vb].view(value_dtype)
            out.index_add_(0, pos * p + r, vals.to(out.dtype))
    return out
