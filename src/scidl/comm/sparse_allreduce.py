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
``dense``
    a ring allreduce of all n values: 2(p−1)/p·n·s_val.

``auto`` picks, per bucket, the cheapest of the three under the α-β model
(:mod:`scidl.scaling.costmodel`: α latency per message, β seconds per byte, from
``comm.link_alpha``/``comm.link_beta``), from sizes and the fill U/(p·k) observed on the
bucket's previous step — values every rank holds identically, so every rank takes the
same branch without a collective.
"""

from __future__ import annotations

import math

import torch

from scidl.comm.sparse import INDEX_BYTES
from scidl.comm.wire import Collective

#: each rank's block of the first all-gather of ``rsag``: p per-owner counts + finite flag
COUNT_ITEM_BYTES = 8
ALGORITHMS = ("allgather", "rsag", "dense")


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


def allgather_wire(k: int, value_bytes: int) -> list[Collective]:
    """The collectives of the flat all-gather: (count, finite) pairs, then k pairs each."""
    return [Collective("allgather", 16), Collective("allgather", k * (INDEX_BYTES + value_bytes))]


def dense_wire(n: int, value_bytes: int) -> list[Collective]:
    """One ring allreduce of all n values."""
    return [Collective("allreduce", n * value_bytes)]


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
             fill: float = 1.0) -> list[Collective]:
    """The collectives of ``algorithm`` for one bucket."""
    if algorithm == "dense":
        return dense_wire(n, value_bytes)
    if algorithm == "rsag":
        return rsag_wire(p, n, k, value_bytes, fill)
    return allgather_wire(k, value_bytes)


def choose_algorithm(p: int, n: int, k: int, value_bytes: int, fill: float, alpha: float,
                     beta: float, allowed: tuple[str, ...] = ALGORITHMS) -> str:
    """The cheapest of ``allowed`` under the α-β model (ties: the earlier one)."""
    costs = {a: predicted_seconds(plan_for(a, p, n, k, value_bytes, fill), p, alpha, beta)
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
