"""α-β-γ cost model of collectives (Thakur, Rabenseifner & Gropp 2005).

A message of ``n`` bytes between two ranks costs ``α + n·β``; reducing ``n`` bytes costs
``n·γ``. For an allreduce of ``n`` bytes on ``p`` ranks:

* ring:               2(p−1)·α + 2(p−1)/p·n·β + (p−1)/p·n·γ
* recursive doubling: ⌈log₂p⌉·(α + n·β + n·γ)                         (``tree``)
* Rabenseifner:       2⌈log₂p⌉·α + 2(p−1)/p·n·β + (p−1)/p·n·γ
* two-level:          ring over the g ranks of a node on n bytes
                      + an allreduce over the N = p/g nodes on n/g bytes
* lower bound:        every rank must send 2(p−1)/p·n bytes.

Hardware with several devices per node has two levels (:class:`Level`): ``intra`` (one
link between two devices) and ``inter`` (a node's network injection bandwidth, shared by
every device of that node that talks to another node at the same time).
:func:`allreduce_cost` places the ranks contiguously on nodes and charges each algorithm
for the links it actually uses. All functions are pure and take seconds and bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALGORITHMS = ("ring", "tree", "rabenseifner", "two-level")


@dataclass(frozen=True)
class LinkCost:
    """Point-to-point cost parameters.

    Attributes:
        alpha: latency per message (s).
        beta: transfer time per byte (s/byte) = 1 / bandwidth.
        gamma: reduction time per byte (s/byte).
    """

    alpha: float
    beta: float
    gamma: float = 0.0


def _log2_ceil(p: int) -> int:
    return 0 if p <= 1 else math.ceil(math.log2(p))


def ring_allreduce_time(n: float, p: int, c: LinkCost) -> float:
    """Ring allreduce: 2(p−1)α + 2(p−1)/p·nβ + (p−1)/p·nγ."""
    if p <= 1:
        return 0.0
    return 2 * (p - 1) * c.alpha + 2 * (p - 1) / p * n * c.beta + (p - 1) / p * n * c.gamma


def recursive_doubling_allreduce_time(n: float, p: int, c: LinkCost) -> float:
    """Recursive doubling: ⌈log₂p⌉(α + nβ + nγ)."""
    return _log2_ceil(p) * (c.alpha + n * c.beta + n * c.gamma)


def rabenseifner_allreduce_time(n: float, p: int, c: LinkCost) -> float:
    """Rabenseifner (reduce-scatter by halving + allgather by doubling):
    2⌈log₂p⌉α + 2(p−1)/p·nβ + (p−1)/p·nγ."""
    if p <= 1:
        return 0.0
    return 2 * _log2_ceil(p) * c.alpha + 2 * (p - 1) / p * n * c.beta + (p - 1) / p * n * c.gamma


def ring_allgather_time(n_out: float, p: int, c: LinkCost) -> float:
    """Ring allgather producing ``n_out`` bytes per rank: (p−1)α + (p−1)/p·n_out·β."""
    if p <= 1:
        return 0.0
    return (p - 1) * c.alpha + (p - 1) / p * n_out * c.beta


def ring_reduce_scatter_time(n_in: float, p: int, c: LinkCost) -> float:
    """Ring reduce-scatter of ``n_in`` bytes per rank: (p−1)α + (p−1)/p·n_in·(β+γ)."""
    if p <= 1:
        return 0.0
    return (p - 1) * c.alpha + (p - 1) / p * n_in * (c.beta + c.gamma)


def allreduce_lower_bound_bytes(n: float, p: int) -> float:
    """Bytes every rank must send in any allreduce of ``n`` bytes: 2(p−1)/p·n."""
    return 0.0 if p <= 1 else 2 * (p - 1) / p * n


def allreduce_bandwidth_bound_time(n: float, p: int, beta: float) -> float:
    """Time to move the lower-bound bytes at ``1/beta`` bytes/s: 2(p−1)/p·n·β."""
    return allreduce_lower_bound_bytes(n, p) * beta


def flat_allreduce_time(n: float, p: int, c: LinkCost, algorithm: str) -> float:
    """One-level allreduce by name (``ring``, ``tree``, ``rabenseifner``)."""
    if algorithm == "ring":
        return ring_allreduce_time(n, p, c)
    if algorithm == "tree":
        return recursive_doubling_allreduce_time(n, p, c)
    if algorithm == "rabenseifner":
        return rabenseifner_allreduce_time(n, p, c)
    raise KeyError(f"unknown algorithm {algorithm!r}; choices: ring, tree, rabenseifner")


def two_level_allreduce_time(
    n: float, g: int, nodes: int, intra: LinkCost, inter: LinkCost, inter_algorithm: str = "ring"
) -> float:
    """Two-level allreduce: intra-node ring on n (reduce-scatter + allgather among g ranks)
    plus an allreduce of the n/g shard across ``nodes`` nodes with ``inter`` costs.

    ``inter`` must already be the per-flow cost when g flows share a node's link.
    """
    return ring_allreduce_time(n, g, intra) + flat_allreduce_time(
        n / max(g, 1), nodes, inter, inter_algorithm
    )


# --------------------------------------------------------------------------- placement


@dataclass(frozen=True)
class Topology:
    """Two-level machine seen by the cost model.

    Attributes:
        devices_per_node: g, ranks placed contiguously on a node.
        intra: cost of one device-to-device link inside a node.
        inter: α, β of the node's network interface (β = 1/injection bandwidth of the
            whole node) and γ of the device.
    """

    devices_per_node: int
    intra: LinkCost
    inter: LinkCost


def _split(p: int, g: int) -> tuple[int, int]:
    g_eff = max(1, min(g, p))
    return g_eff, math.ceil(p / g_eff)


def _doubling_rounds_time(n: float, p: int, topo: Topology, halving: bool) -> float:
    """Recursive doubling (halving=False) or Rabenseifner (halving=True) with the rounds
    at distance ≥ g crossing the network, all g devices of a node sharing its link."""
    g, nodes = _split(p, topo.devices_per_node)
    rounds = _log2_ceil(p)
    total = 0.0
    for k in range(rounds):
        off_node = nodes > 1 and 2**k >= g
        if off_node:
            c = LinkCost(topo.inter.alpha, topo.inter.beta * g, topo.intra.gamma)
        else:
            c = topo.intra
        if halving:  # reduce-scatter round k moves n/2^(k+1); allgather mirrors it
            m = n / 2 ** (k + 1)
            total += 2 * c.alpha + 2 * m * c.beta + m * c.gamma
        else:
            total += c.alpha + n * c.beta + n * c.gamma
    return total


def allreduce_cost(n: float, p: int, topo: Topology, algorithm: str = "ring") -> float:
    """Seconds for one allreduce of ``n`` bytes on ``p`` ranks of a two-level machine.

    Algorithms: ``ring`` (flat ring; each node's network link carries one flow per
    direction, every step waits for the slowest hop), ``tree`` (recursive doubling),
    ``rabenseifner``, ``two-level`` (intra ring + inter ring on n/g) and
    ``two-level:<tree|rabenseifner>`` for another inter-node algorithm.
    """
    if p <= 1 or n <= 0:
        return 0.0
    g, nodes = _split(p, topo.devices_per_node)
    if nodes == 1:
        base, _, _ = algorithm.partition(":")
        alg = "ring" if base == "two-level" else base
        return flat_allreduce_time(n, p, topo.intra, alg)
    base, _, inter_alg = algorithm.partition(":")
    if base == "ring":
        c = LinkCost(
            max(topo.intra.alpha, topo.inter.alpha),
            max(topo.intra.beta, topo.inter.beta),
            topo.intra.gamma,
        )
        return ring_allreduce_time(n, p, c)
    if base == "tree":
        return _doubling_rounds_time(n, p, topo, halving=False)
    if base == "rabenseifner":
        return _doubling_rounds_time(n, p, topo, halving=True)
    if base == "two-level":
        inter = LinkCost(topo.inter.alpha, topo.inter.beta * g, topo.intra.gamma)
        return two_level_allreduce_time(n, g, nodes, topo.intra, inter, inter_alg or "ring")
    raise KeyError(f"unknown algorithm {algorithm!r}; choices: {', '.join(ALGORITHMS)}")


def allgather_cost(n_out: float, p: int, topo: Topology) -> float:
    """Ring allgather producing ``n_out`` bytes per rank on a two-level machine."""
    if p <= 1:
        return 0.0
    g, nodes = _split(p, topo.devices_per_node)
    if nodes == 1:
        return ring_allgather_time(n_out, p, topo.intra)
    c = LinkCost(
        max(topo.intra.alpha, topo.inter.alpha), max(topo.intra.beta, topo.inter.beta), 0.0
    )
    return ring_allgather_time(n_out, p, c)


# --------------------------------------------------------------------------- compression


@dataclass(frozen=True)
class Compression:
    """How gradients travel: ``dense`` (fp32), ``fp16`` (half the bytes) or
    ``topk`` at ``density`` (sparse values + int32 indices, allgathered; switches to a
    dense allreduce when that is cheaper, SparCML's rule)."""

    kind: str = "dense"
    density: float = 1.0
    value_bytes: int = 4
    index_bytes: int = 4

    @property
    def dense_ratio(self) -> float:
        """Bytes on the wire relative to fp32 for the dense path."""
        return 0.5 if self.kind == "fp16" else 1.0


def parse_comm(spec: str) -> tuple[Compression, str | None]:
    """Parse ``dense | hierarchical | fp16 | topk:0.01`` into (compression, forced algorithm).

    ``hierarchical`` means dense with the two-level algorithm.
    """
    name, _, arg = spec.partition(":")
    if name == "dense":
        return Compression(), None
    if name == "hierarchical":
        return Compression(), "two-level"
    if name == "fp16":
        return Compression("fp16", value_bytes=2), None
    if name == "topk":
        try:
            d = float(arg) if arg else 0.01
        except ValueError:
            raise KeyError(f"topk density must be a number, got {arg!r}") from None
        if not 0 < d <= 1:
            raise KeyError(f"topk density must be in (0, 1], got {d}")
        return Compression("topk", density=d), None
    raise KeyError(f"unknown --comm {spec!r}; choices: dense, hierarchical, fp16, topk:DENSITY")


def compression_ratio(comp: Compression, p: int) -> float:
    """Bytes each rank sends relative to a dense fp32 ring allreduce (lower is better).

    fp16: 0.5. topk: sparse allgather sends (p−1)·nnz·(s_val+s_idx) vs 2(p−1)/p·n·4,
    i.e. p·d·(s_val+s_idx)/(2·4), capped at 1 (dense fallback).
    """
    if comp.kind != "topk":
        return comp.dense_ratio
    if p <= 1:
        return comp.density * (comp.value_bytes + comp.index_bytes) / 4
    sparse = p * comp.density * (comp.value_bytes + comp.index_bytes) / (2 * 4)
    return min(1.0, sparse)


def gradient_comm_time(
    grad_bytes_fp32: float, p: int, topo: Topology, algorithm: str, comp: Compression
) -> float:
    """Seconds to reduce one bucket of ``grad_bytes_fp32`` (fp32 size) under ``comp``."""
    if p <= 1 or grad_bytes_fp32 <= 0:
        return 0.0
    dense_bytes = grad_bytes_fp32 * comp.dense_ratio
    dense = allreduce_cost(dense_bytes, p, topo, algorithm)
    if comp.kind != "topk":
        return dense
    numel = grad_bytes_fp32 / 4
    per_rank = comp.density * numel * (comp.value_bytes + comp.index_bytes)
    sparse = allgather_cost(per_rank * p, p, topo)
    return min(sparse, dense)
