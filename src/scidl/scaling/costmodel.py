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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from scidl.comm.accounting import ring_allreduce_bytes, ring_pass_bytes, ring_steps

if TYPE_CHECKING:
    from scidl.comm.base import CommStrategy
    from scidl.comm.config import CommConfig
    from scidl.comm.wire import Collective, Shape

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
    op_beta: Mapping[str, float] = field(default_factory=dict)
    op_latency: Mapping[str, Mapping[int, Sequence[Sequence[float]]]] = field(
        default_factory=dict)

    def for_op(self, op: str) -> LinkCost:
        """The cost of ``op`` on this link: its own measured rate where there is one
        (``op_beta``, the reduction folded in; for ``op:dtype``, that type's rate, else
        the bare op's), else β and γ."""
        rate = self.op_beta.get(op)
        if rate is None:
            rate = self.op_beta.get(op.partition(":")[0])
        return self if rate is None else LinkCost(self.alpha, rate, 0.0)

    def floor(self, op: str, p: int, nbytes: float) -> float:
        """The least seconds one ``op`` of ``nbytes`` at ``p`` ranks takes on this link as
        measured (``op_latency``, :func:`latency_floor`; for ``op:dtype``, that type's
        times, else the bare op's); 0 where nothing was measured."""
        table = self.op_latency.get(op) or self.op_latency.get(op.partition(":")[0])
        return latency_floor(table or {}, p, nbytes)


def _floor_at(table: Sequence[Sequence[float]], nbytes: float) -> float:
    """Seconds of the largest measured size ≤ ``nbytes`` of one (op, p) table
    ``[[bytes, seconds], ...]`` (the smallest size's below it), never less than a smaller
    size's: a step function that does not fall with size."""
    rows = sorted((float(b), float(t)) for b, t in table)
    if not rows:
        return 0.0
    out = best = rows[0][1]
    for size, secs in rows[1:]:
        best = max(best, secs)
        if size <= nbytes:
            out = best
    return out


def latency_floor(by_ranks: Mapping[int, Sequence[Sequence[float]]], p: int,
                  nbytes: float) -> float:
    """Measured lower bound of one collective's seconds at ``p`` ranks for ``nbytes``.

    ``by_ranks``: {p: [[bytes, seconds], ...]}: mean times of small messages of one op
    (``scidl bench-collectives``, sizes where the time barely depends on the size: the
    per-message cost of the backend, the scheduler and the link's latency together,
    with whatever algorithm switches the backend makes by size). At a measured count,
    the step function of its table (:func:`_floor_at`); between two measured counts,
    linear in the ring's steps p − 1; beyond the largest (or below the smallest), that
    count's value scaled by (p − 1)/(p_m − 1): one more hop per rank. 0 for one rank or
    without measurements. The cost model takes the larger of this and its α-β price
    (:func:`collective_cost`), so it changes only collectives that the α-β model prices
    below what was measured."""
    pts = sorted((int(k), _floor_at(v, nbytes)) for k, v in by_ranks.items()
                 if int(k) > 1 and v)
    if p <= 1 or not pts:
        return 0.0
    for (p0, t0), (p1, t1) in zip(pts, pts[1:], strict=False):
        if p0 <= p <= p1:
            return t0 + (t1 - t0) * (p - p0) / (p1 - p0)
    pm, tm = pts[-1] if p > pts[-1][0] else pts[0]
    return tm * (p - 1) / (pm - 1)


def _log2_ceil(p: int) -> int:
    return 0 if p <= 1 else math.ceil(math.log2(p))


def ring_allreduce_time(n: float, p: int, c: LinkCost) -> float:
    """Ring allreduce: 2(p−1)α + 2(p−1)/p·nβ + (p−1)/p·nγ."""
    if p <= 1:
        return 0.0
    return 2 * ring_steps(p) * c.alpha + ring_allreduce_bytes(n, p) * c.beta \
        + ring_pass_bytes(n, p) * c.gamma


def recursive_doubling_allreduce_time(n: float, p: int, c: LinkCost) -> float:
    """Recursive doubling: ⌈log₂p⌉(α + nβ + nγ)."""
    return _log2_ceil(p) * (c.alpha + n * c.beta + n * c.gamma)


def rabenseifner_allreduce_time(n: float, p: int, c: LinkCost) -> float:
    """Rabenseifner (reduce-scatter by halving + allgather by doubling):
    2⌈log₂p⌉α + 2(p−1)/p·nβ + (p−1)/p·nγ."""
    if p <= 1:
        return 0.0
    return 2 * _log2_ceil(p) * c.alpha + ring_allreduce_bytes(n, p) * c.beta \
        + ring_pass_bytes(n, p) * c.gamma


def ring_allgather_time(n_out: float, p: int, c: LinkCost) -> float:
    """Ring allgather producing ``n_out`` bytes per rank: (p−1)α + (p−1)/p·n_out·β."""
    if p <= 1:
        return 0.0
    return ring_steps(p) * c.alpha + ring_pass_bytes(n_out, p) * c.beta


def ring_reduce_scatter_time(n_in: float, p: int, c: LinkCost) -> float:
    """Ring reduce-scatter of ``n_in`` bytes per rank: (p−1)α + (p−1)/p·n_in·(β+γ)."""
    if p <= 1:
        return 0.0
    return ring_steps(p) * c.alpha + ring_pass_bytes(n_in, p) * (c.beta + c.gamma)


def allreduce_lower_bound_bytes(n: float, p: int) -> float:
    """Bytes every rank must send in any allreduce of ``n`` bytes: 2(p−1)/p·n."""
    return ring_allreduce_bytes(float(n), p)


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


def reduce_scatter_cost(n_in: float, p: int, topo: Topology) -> float:
    """Ring reduce-scatter of ``n_in`` bytes per rank on a two-level machine."""
    if p <= 1:
        return 0.0
    g, nodes = _split(p, topo.devices_per_node)
    if nodes == 1:
        return ring_reduce_scatter_time(n_in, p, topo.intra)
    c = LinkCost(max(topo.intra.alpha, topo.inter.alpha), max(topo.intra.beta, topo.inter.beta),
                 topo.intra.gamma)
    return ring_reduce_scatter_time(n_in, p, c)


def collective_cost(c: Collective, p: int, topo: Topology, algorithm: str) -> float:
    """Seconds for one collective of a strategy's plan (:mod:`scidl.comm.wire`), at the
    links' measured rate for that op where they have one, and never below the time
    measured for that op, size and rank count where there is one (both for the
    collective's element type where it was timed in it; :func:`latency_floor`:
    the α-β model prices a small collective at its α, which a fit from bandwidth-bound
    sizes reads as about 0)."""
    _, nodes = _split(p, topo.devices_per_node)
    floor = (topo.inter if nodes > 1 else topo.intra).floor(c.key, p, c.nbytes)
    topo = Topology(topo.devices_per_node, topo.intra.for_op(c.key), topo.inter.for_op(c.key))
    if c.op == "allreduce":
        model = allreduce_cost(c.nbytes, p, topo, algorithm)
    elif c.op == "allgather":
        model = allgather_cost(c.nbytes * p, p, topo)
    else:
        model = reduce_scatter_cost(c.nbytes, p, topo)
    return max(model, floor)


# --------------------------------------------------------------------------- compression


@dataclass(frozen=True)
class Compression:
    """A gradient-communication strategy with its settings, as the cost model prices it.

    The strategy describes its own traffic (:meth:`scidl.comm.CommStrategy.wire`); the
    cost model only prices the collectives it names.

    Attributes:
        kind: a registered ``comm.strategy`` (``dense``, ``fp16``, ``topk``, ``powersgd``,
            ``grouped``, ``lag``, ``hierarchical``, ``bf16`` or a plugin's).
        density: ``comm.density`` (``topk``); None: the default.
        value_bytes: ``topk``: bytes per sent value (2: ``comm.value_dtype=fp16``); the
            other strategies have a wire type of their own.
        options: any other ``comm.*`` settings, as ``(key, value)`` pairs.
    """

    kind: str = "dense"
    density: float | None = None
    value_bytes: int | None = None
    options: tuple[tuple[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        _ = self.config  # an unknown strategy or a bad setting fails here

    @cached_property
    def config(self) -> CommConfig:
        """The ``comm`` settings this stands for (ValueError names a bad one)."""
        from pydantic import ValidationError

        from scidl.comm.config import CommConfig

        upd: dict[str, Any] = dict(self.options)
        if self.density is not None:
            upd["density"] = self.density
        if self.value_bytes is not None and self.kind == "topk":
            upd["value_dtype"] = {2: "fp16", 4: "fp32"}.get(self.value_bytes, self.value_bytes)
        try:
            return CommConfig(strategy=self.kind, **upd)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise ValueError(f"comm.{loc}: {err['msg'].removeprefix('Value error, ')}") from None

    @property
    def strategy(self) -> type[CommStrategy]:
        from scidl.comm.registry import get_strategy_class

        return get_strategy_class(self.kind)

    @property
    def algorithm(self) -> str | None:
        """The allreduce algorithm the strategy runs itself (None: the machine's)."""
        return self.strategy.allreduce_algorithm(self.config)

    @property
    def lagged(self) -> bool:
        """The reduced gradients are applied one step late (overlapping a whole step)."""
        return self.strategy.lagged

    @property
    def fusion_bytes(self) -> float | None:
        """Size of the groups the strategy fuses gradients into (None: DDP's buckets)."""
        return self.strategy.fusion_bytes(self.config)

    def plan(self, numel: int, p: int, shapes: Sequence[Shape] | None = None
             ) -> list[Collective]:
        """The strategy's collectives for one bucket of ``numel`` fp32 entries."""
        return self.strategy.wire(self.config, numel, p, shapes)

    def syncs(self, numel: int, p: int, per_node: int = 1,
              shapes: Sequence[Shape] | None = None) -> int:
        """Collectives one bucket waits on in turn on ``p`` ranks, ``per_node`` to a node
        (:meth:`scidl.comm.CommStrategy.sync_points`)."""
        return self.strategy.sync_points(self.config, numel, p, per_node, shapes)

    def bytes_sent(self, numel: int, p: int, shapes: Sequence[Shape] | None = None) -> float:
        """Bytes one rank sends for that bucket."""
        return self.strategy.wire_bytes(self.config, numel, p, shapes)


def spec_of(cfg: CommConfig) -> str:
    """The ``--comm`` spec of a run's ``comm`` settings: ``name[:VALUE][:key=value…]``
    with the settings the strategy's traffic depends on (non-default ones as key=value)."""
    from scidl.comm.config import CommConfig
    from scidl.comm.registry import get_strategy_class

    keys = get_strategy_class(cfg.strategy).spec_settings(cfg)
    default = CommConfig()
    parts = [cfg.strategy]
    for i, key in enumerate(keys):
        value = getattr(cfg, key)
        if i == 0:
            parts.append(str(value))
        elif value != getattr(default, key):
            parts.append(f"{key}={value}")
    return ":".join(parts)


def parse_comm(spec: str) -> tuple[Compression, str | None]:
    """Parse ``NAME[:VALUE][:key=value…]`` into (compression, the algorithm it implies).

    ``NAME`` is a registered ``comm.strategy``; ``VALUE`` sets its first wire setting
    (``topk:0.01`` → ``comm.density``, ``powersgd:8`` → ``comm.rank``, ``lag:fp16`` →
    ``comm.lag_inner``, ``grouped:4`` → ``comm.group_mb``); ``key=value`` sets any
    ``comm.*`` setting. ``hierarchical`` implies the two-level algorithm. Errors are
    ``KeyError`` with one readable line.
    """
    from scidl.comm.registry import STRATEGIES
    from scidl.config import parse_value

    name, *args = spec.strip().split(":")
    cls = STRATEGIES.get(name)  # RegistryError (a KeyError) lists the choices
    opts: dict[str, Any] = {}
    for i, arg in enumerate(args):
        key, eq, raw = arg.partition("=")
        if not eq:
            first = cls.wire_settings[:1]
            if i or not first:
                raise KeyError(f"--comm {spec!r}: {name} takes "
                               + (f"{name}:VALUE for comm.{first[0]}, then " if first else "")
                               + "key=value settings")
            key, raw = first[0], arg
        opts[key.strip()] = parse_value(raw)
    density = opts.pop("density", None)
    try:
        comp = Compression(name, density=density, options=tuple(sorted(opts.items())))
    except ValueError as e:
        raise KeyError(f"--comm {spec!r}: {e}") from None
    return comp, comp.algorithm


def compression_ratio(comp: Compression, p: int, numel: int = 10**9) -> float:
    """Bytes each rank sends relative to a dense fp32 ring allreduce (lower is better),
    for one large bucket of ``numel`` entries (control messages vanish); p ≥ 2.

    fp16: 0.5. topk: ≈ p·d·(s_val+s_idx)/(2·4), 1 where it switches to dense.
    """
    p = max(p, 2)
    return comp.bytes_sent(numel, p) / ring_allreduce_bytes(4.0 * numel, p)


def gradient_comm_time(
    grad_bytes_fp32: float, p: int, topo: Topology, algorithm: str, comp: Compression,
    shapes: Sequence[Shape] | None = None,
) -> float:
    """Seconds to reduce one bucket of ``grad_bytes_fp32`` (fp32 size) under ``comp``:
    the strategy's collectives priced on ``topo`` (``shapes``: its parameters' shapes)."""
    if p <= 1 or grad_bytes_fp32 <= 0:
        return 0.0
    alg = comp.algorithm or algorithm
    plan = comp.plan(int(grad_bytes_fp32 // 4), p, shapes)
    return sum(collective_cost(c, p, topo, alg) for c in plan)


# --------------------------------------------------------------------------- step terms
#
# Costs of a data-parallel step other than the collectives, each with the parameter a
# user measures on one node (``scidl profile``) and the source of its form.


def burst_saving(wire_s: float, burst_s: float, idle_s: float) -> float:
    """Seconds of a step's network time a token-bucket link does not charge.

    A shaped link (Linux ``tc-tbf``; cloud instances' burst allowances work alike) lets
    the bucket's depth b through at once, then runs at its rate r; while the link is
    idle the bucket refills at r. Between two steps' communication the link idles for
    the compute, so the bucket holds min(b, r·idle) at the start of a step's traffic and
    that many bytes cost nothing: min(b/r, idle) seconds, at most the wire time itself.
    ``wire_s``: the step's bytes on the link priced at β alone (no latency);
    ``burst_s``: b·β; ``idle_s``: the time the link idles before the traffic."""
    return max(0.0, min(wire_s, burst_s, idle_s))


def expected_max_z(p: int) -> float:
    """E[max of p iid standard normal draws], Blom's approximation
    Φ⁻¹((p − 0.375)/(p + 0.25)) (Blom 1958, *Statistical Estimates and Transformed
    Beta-Variables*; within 3 % of the exact value for p ≥ 2, and it grows like
    √(2 ln p), the Gumbel limit of the maximum). 0 for p = 1; p = 2 gives 0.589
    (exact 1/√π = 0.564)."""
    if p <= 1:
        return 0.0
    from statistics import NormalDist

    return NormalDist().inv_cdf((p - 0.375) / (p + 0.25))


def straggler_time(p: int, sigma: float) -> float:
    """Seconds a synchronous step waits for the slowest of p ranks: σ·E[max of p z].

    A step ends when the last rank's gradients arrive, so the step takes the maximum
    of the p per-rank step times, not their mean (Dean & Barroso 2013, "The tail at
    scale", CACM 56(2); the order-statistics form as in Hoefler, Schneider & Lumsdaine
    2010, "Characterizing the influence of system noise on large-scale applications by
    simulation", SC'10). ``sigma``: standard deviation of one rank's step time,
    measured as the robust spread (1.4826·MAD) of its step times over steps.
    """
    if p <= 1 or sigma <= 0:
        return 0.0
    return sigma * expected_max_z(p)


def compute_at_batch(batch: float, curve: Sequence[tuple[float, float]]) -> float:
    """Compute seconds per step at a local ``batch`` from a measured curve of
    (local batch, seconds per step) points.

    Linear interpolation between measured points; outside them, the affine model
    t(b) = t₀ + k·b through the two nearest points (a fixed cost per step plus a cost
    per sample, Hockney 1994's latency–throughput form), never below 5 % of the
    nearest measured time. Strong scaling shrinks the local batch, and small batches
    use a device less well: this is the term that bends strong-scaling curves.
    """
    pts = sorted((float(b), float(t)) for b, t in curve)
    if not pts:
        raise ValueError("empty batch-efficiency curve")
    if len(pts) == 1:
        b0, t0 = pts[0]
        return t0 * batch / b0
    if batch <= pts[0][0]:
        (b0, t0), (b1, t1) = pts[0], pts[1]
        floor = 0.05 * t0
    elif batch >= pts[-1][0]:
        (b0, t0), (b1, t1) = pts[-2], pts[-1]
        floor = 0.05 * t1
    else:
        i = next(i for i in range(1, len(pts)) if pts[i][0] >= batch)
        (b0, t0), (b1, t1) = pts[i - 1], pts[i]
        floor = 0.0
    k = (t1 - t0) / (b1 - b0)
    return max(t0 + k * (batch - b0), floor)


def curve_from_throughput(rates: Mapping[float, float]) -> list[tuple[float, float]]:
    """A batch-efficiency curve of (local batch, seconds per step) from a published or
    measured single-device throughput (samples/s) at each batch size: t(b) = b / rate(b).

    This is the input :func:`compute_at_batch` reads; a throughput table at two or more
    batch sizes (e.g. a framework's single-GPU benchmark table) is enough."""
    return sorted((float(b), float(b) / float(r)) for b, r in rates.items() if r > 0)


def affine_batch_fit(curve: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares fit of t(b) = t₀ + k·b to (local batch, seconds) points: (t₀, k).

    t₀ is the fixed cost of a step (kernel launches, framework overhead, the optimizer
    update, all independent of the batch), k the cost per sample: Hockney 1994's
    latency–throughput form, the one :func:`compute_at_batch` extrapolates with.
    Needs two distinct batch sizes."""
    pts = [(float(b), float(t)) for b, t in curve]
    if len({b for b, _ in pts}) < 2:
        raise ValueError("an affine batch fit needs two distinct batch sizes")
    n = len(pts)
    mb = sum(b for b, _ in pts) / n
    mt = sum(t for _, t in pts) / n
    k = sum((b - mb) * (t - mt) for b, t in pts) / sum((b - mb) ** 2 for b, _ in pts)
    return mt - k * mb, k


def fixed_share(curve: Sequence[tuple[float, float]], batch: float) -> float:
    """Share of a step at local ``batch`` that does not shrink with the batch: t₀ / t(b)
    of the affine fit (:func:`affine_batch_fit`). 0: compute ∝ batch (perfect strong
    scaling of compute); 0.2: halving the batch leaves 60 % of the step, not 50 %."""
    t0, k = affine_batch_fit(curve)
    return t0 / (t0 + k * batch)


def affine_curve(share: float, batch: float, low: float | None = None
                 ) -> list[tuple[float, float]]:
    """Two points, at ``low`` (default batch/2) and ``batch``, of the affine curve whose
    fixed share at ``batch`` is ``share`` (time 1 at ``batch``): the curve
    :func:`fixed_share` reads back as ``share``. Give ``low`` the smallest local batch
    it will be read at, so :func:`compute_at_batch` interpolates rather than extrapolates."""
    low = batch / 2 if low is None else float(low)
    if not 0.0 <= share < 1.0 or batch <= 0 or not 0 < low < batch:
        raise ValueError("share must be in [0, 1), 0 < low < batch")
    return [(low, share + (1 - share) * low / batch), (float(batch), 1.0)]


def fixed_samples(curve: Sequence[tuple[float, float]]) -> float:
    """The fixed part of a step counted in samples: b½ = t₀/k of the affine fit
    (:func:`affine_batch_fit`), the local batch at which the batch-independent part
    equals the per-sample part. Unlike t₀ it does not depend on the device's speed:
    a device that runs every kernel c× faster scales t₀ and k alike (0 where the fit
    has no fixed part)."""
    t0, k = affine_batch_fit(curve)
    return max(t0, 0.0) / k if k > 0 else 0.0


def transferred_curve(curve: Sequence[tuple[float, float]], batch: float,
                      low: float | None = None) -> list[tuple[float, float]]:
    """``curve``'s shape carried to another device: the affine curve with the same
    fixed part in samples (:func:`fixed_samples`), time 1 at ``batch``, points at
    ``low`` and ``batch`` (see :func:`affine_curve`). For strong scaling on a device
    where the model's batch curve was not measured: its fixed share at ``batch`` is
    b½/(b½ + batch), where compute ∝ batch would assume 0."""
    b_half = fixed_samples(curve)
    return affine_curve(b_half / (b_half + batch), batch, low)


def interference_time(overlapped_s: float, t_bwd: float, slowdown: float) -> float:
    """Extra compute seconds while communication overlaps the backward pass.

    Echo (Feng et al. 2024, "Echo: Simulating Distributed Training At Scale", arXiv
    2412.12487) models compute kernels slowed by concurrent collectives (shared memory
    bandwidth, SMs or cores spent on communication). Here the backward pass runs
    ``slowdown``× slower (measured: backward time with concurrent collectives ÷
    without) for as long as communication overlaps it: (slowdown − 1)·min(overlap, T_bwd).
    """
    if slowdown <= 1.0 or overlapped_s <= 0:
        return 0.0
    return (slowdown - 1.0) * min(overlapped_s, t_bwd)


def io_time(loader_s: float, bytes_per_rank: float, p: int, fs_bytes_per_s: float | None
            ) -> float:
    """Seconds to read one step's input on each of p ranks sharing one file system.

    One rank alone takes ``loader_s`` (measured from its data loader); p ranks reading
    ``bytes_per_rank`` each at once share the file system's aggregate bandwidth, so the
    read takes at least p·bytes/B_fs (Mohan et al. 2021, "Analyzing and Mitigating
    Data Stalls in DNN Training", VLDB 14(5); Chowdhury et al. 2019, "I/O
    characterization and performance evaluation of BeeGFS for deep learning", ICPP).
    """
    shared = p * bytes_per_rank / fs_bytes_per_s if fs_bytes_per_s and bytes_per_rank > 0 else 0.0
    return max(loader_s, shared)


def io_stall(io_s: float, compute_s: float, prefetch: bool = True) -> float:
    """Seconds a step waits for its input: a prefetching loader (workers reading the
    next batch during this step) stalls only by what reading takes beyond the step's
    compute (Mohan et al. 2021's data stall); without prefetching, all of it."""
    return max(0.0, io_s - compute_s) if prefetch else max(0.0, io_s)


def timeline_ready_times(t_fwd: float, t_bwd: float, fractions: Sequence[float] | None,
                         sizes: Sequence[float]) -> list[float]:
    """When each gradient bucket is ready in the backward pass (seconds from the step's
    start).

    ``fractions``: the recorded bucket timeline, each bucket's ready time as a fraction
    of the backward pass (``scidl profile`` records it from per-parameter gradient
    hooks); None: ready in proportion to the bytes done so far (uniform backward). The
    recorded timeline matters because the last layers of the backward pass (the first
    layers of the model: convolutions over large images) are often the slowest, so
    buckets are ready later than their bytes say (Li et al. 2020, "PyTorch Distributed",
    VLDB 13(12), sec. 5).
    """
    if fractions is not None and len(fractions) == len(sizes):
        return [t_fwd + t_bwd * min(max(float(f), 0.0), 1.0) for f in fractions]
    total = sum(sizes) or 1.0
    out, done = [], 0.0
    for s in sizes:
        done += s
        out.append(t_fwd + t_bwd * done / total)
    return out
