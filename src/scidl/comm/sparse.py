"""Pure building blocks of the sparse allreduce: selection, wire format, switch rule.

Selection picks the k = ⌈density·n⌉ largest-magnitude entries of a flat tensor. Exact
``torch.topk`` costs O(n log k) with a large constant on CPU (≈ 0.5 s for 6.5 M floats on
one core here); the threshold method estimates the (1 − density) quantile of |x| from a
random sample (at 1.5× the density), keeps every entry above it in one pass and trims
the candidates to exactly k (≈ 0.07 s). Only buckets with fewer than k non-zero entries
send fewer; the all-gather protocol carries variable counts for them.

Wire format of one rank's contribution: a byte buffer of ``cap`` int32 indices followed
by ``cap`` values (fp32 or fp16); ranks pad to the largest count of the step.
"""

from __future__ import annotations

import math

import torch

INDEX_BYTES = 4


def k_for(n: int, density: float) -> int:
    """Entries sent for a bucket of ``n``: k = max(1, ⌈density·n⌉), at most n."""
    return min(n, max(1, math.ceil(density * n)))


def prefer_dense(p: int, nnz: int, n: int, value_bytes: int) -> bool:
    """SparCML's switch rule: sparse all-gather costs ≈ p·nnz·(s_val+s_idx) bytes per rank,
    a ring allreduce ≈ 2·n·s_val; go dense when p·nnz·(1 + s_idx/s_val) > 2n."""
    return p * nnz * (1 + INDEX_BYTES / value_bytes) > 2 * n


def exact_topk(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (int64) of the k largest |x| (exact, unsorted)."""
    if k >= x.numel():
        return torch.arange(x.numel(), device=x.device)
    return torch.topk(x.abs(), k, sorted=False).indices


def above(x: torch.Tensor, t: float, chunk: int = 1 << 18) -> torch.Tensor:
    """Indices (int64) of the entries with |x| ≥ t, in one chunked pass.

    Chunks of 256 k entries with reused scratch buffers stay in cache and allocate no
    n-sized temporaries; on one CPU core this is ≈ 8× faster than
    ``nonzero(x.abs() >= t)`` on 16 M floats.
    """
    n = x.numel()
    if n <= chunk:
        return torch.nonzero(x.abs() >= t, as_tuple=True)[0]
    buf = torch.empty(chunk, dtype=x.dtype, device=x.device)
    mask = torch.empty(chunk, dtype=torch.bool, device=x.device)
    parts = []
    for s in range(0, n, chunk):
        seg = x[s : s + chunk]
        m = seg.numel()
        torch.abs(seg, out=buf[:m])
        torch.ge(buf[:m], t, out=mask[:m])
        i = torch.nonzero(mask[:m], as_tuple=True)[0]
        if i.numel():
            parts.append(i.add_(s))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64, device=x.device)


def threshold_topk(
    x: torch.Tensor, k: int, sample_fraction: float, gen: torch.Generator,
    min_sample_hits: int = 64, margin: float = 1.5,
) -> torch.Tensor:
    """Indices of exactly the k largest |x| (ties broken arbitrarily), found from a
    sampled threshold: t is the estimated (1 − margin·k/n) quantile of |x|, every entry
    with |x| ≥ t is a candidate (one pass), and the k largest candidates are kept.

    The sample holds enough entries that ≈ ``min_sample_hits`` of them lie above the
    quantile, so the candidate count is margin·k ± ≈ 13 %: nearly always ≥ k, and
    trimming ≈ 1.5·k candidates costs little. The count is exactly k, never fewer: a
    threshold taken at the k-th quantile itself misses about half the time, which sent
    0.944 % of the entries for ``comm.density=0.01``. Too few candidates (ties,
    mostly-zero buckets) fall back to the exact method.
    """
    n = x.numel()
    if k >= n:
        return torch.arange(n, device=x.device)
    density = min(1.0, margin * k / n)
    m = min(n, max(int(sample_fraction * n), math.ceil(min_sample_hits / density)))
    sample = x[torch.randint(0, n, (m,), generator=gen).to(x.device)].abs()
    ks = max(1, min(m, round(density * m)))
    t = float(torch.topk(sample, ks, sorted=False).values.min())
    if t <= 0:  # more than (1 − density) of the sample is zero
        t = torch.finfo(x.dtype).tiny
    idx = above(x, t)
    c = idx.numel()
    if c > k:  # keep the k largest candidates
        return idx[torch.topk(x[idx].abs(), k, sorted=False).indices]
    if c < k and t > torch.finfo(x.dtype).tiny:  # too few: the exact method
        return exact_topk(x, k)
    return idx  # c == k, or every non-zero entry when fewer than k are non-zero


def select(
    x: torch.Tensor, k: int, method: str, exact_max_numel: int, sample_fraction: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """Top-k indices by ``method`` (exact | threshold | auto: exact up to a size)."""
    if method == "exact" or (method == "auto" and x.numel() <= exact_max_numel):
        return exact_topk(x, k)
    return threshold_topk(x, k, sample_fraction, gen)


def segments_k(segments: list[tuple[int, int]], density: float) -> int:
    """Planned entries for a bucket made of ``(start, n)`` segments: Σ ⌈density·n_i⌉."""
    return sum(k_for(n, density) for _, n in segments)


def select_segments(
    x: torch.Tensor, segments: list[tuple[int, int]], density: float, method: str,
    exact_max_numel: int, sample_fraction: float, gen: torch.Generator,
) -> torch.Tensor:
    """Top-k of every segment (one parameter each), k_i = ⌈density·n_i⌉, as bucket indices.

    Selecting per parameter makes the result independent of how DDP groups parameters
    into buckets (which changes once after the first step, and again after a restart),
    and gives every layer its share of the traffic (layer-wise top-k, as in DGC).
    """
    parts = []
    for start, n in segments:
        seg = x[start : start + n]
        idx = select(seg, k_for(n, density), method, exact_max_numel, sample_fraction, gen)
        parts.append(idx + start if start else idx)
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def pack(idx: torch.Tensor, vals: torch.Tensor, cap: int) -> torch.Tensor:
    """One rank's wire buffer: ``cap`` int32 indices then ``cap`` values, as bytes."""
    vb = vals.element_size()
    out = torch.empty(cap * (INDEX_BYTES + vb), dtype=torch.uint8, device=idx.device)
    c = idx.numel()
    out[: cap * INDEX_BYTES].view(torch.int32)[:c] = idx
    out[cap * INDEX_BYTES :].view(vals.dtype)[:c] = vals
    return out


def unpack_sum(
    gathered: torch.Tensor, counts: list[int], cap: int, value_dtype: torch.dtype,
    out: torch.Tensor,
) -> torch.Tensor:
    """Zero ``out`` and add every rank's (index, value) pairs into it: Σ_r sparse_r."""
    p = len(counts)
    rows = gathered.view(p, -1)
    idx = rows[:, : cap * INDEX_BYTES].reshape(-1).view(torch.int32).view(p, cap)
    vals = rows[:, cap * INDEX_BYTES :].reshape(-1).view(value_dtype).view(p, cap)
    out.zero_()
    if all(c == cap for c in counts):
        return out.index_add_(0, idx.reshape(-1), vals.reshape(-1).to(out.dtype))
    for r, c in enumerate(counts):
        if c:
            out.index_add_(0, idx[r, :c], vals[r, :c].to(out.dtype))
    return out
