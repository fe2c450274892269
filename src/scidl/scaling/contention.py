"""Compute contention of ranks that share cores (virtual cluster, oversubscribed nodes).

When p ranks run on C < p cores, a rank's compute is slowed by two things:

1. **Processor sharing.** k runnable ranks on C cores each progress at C/k of a core,
   so a compute phase that every rank runs at the same time takes
   ``max(1, k/C)`` times as long (the work-conserving bound of processor sharing;
   Kleinrock 1967, "Time-shared systems: a theoretical treatment", JACM 14(2)).
   In a synchronous data-parallel step every rank computes at the same time (the
   collectives end the step together on every rank), so k = p.
2. **Scheduling delay at each synchronisation.** A collective makes progress only when
   every rank is on a core; a rank that the scheduler has set aside behind another
   rank's compute delays it for all (the slowest rank ends each round; the same effect
   as operating-system noise amplified by collectives, Hoefler, Schneider & Lumsdaine
   2010, "Characterizing the influence of system noise on large-scale applications by
   simulation", SC'10). This costs a fixed time per collective, not per second of
   compute, so it weighs on short compute phases more than on long ones.

The compute probe (:func:`scidl.scaling.collectives.measure_compute_slowdown`) measures
the sum of both on steps of ``w`` seconds of compute, each ended by one collective:
``s_probe(p) = max(1, p/C) + δ(p)/w``. Its step is short (a few ms), so δ is most of
what it reads beyond p/C; a training step whose compute phase between collectives
lasts c seconds slows by ``max(1, p/C) + δ(p)/c`` (:func:`phase_factor`). All functions
are pure and take seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


def sharing_factor(ranks: float, cores: int) -> float:
    """Slowdown of a compute phase that ``ranks`` ranks run at once on ``cores`` cores:
    max(1, ranks/cores) (processor sharing, no cost of switching)."""
    if cores < 1:
        raise ValueError("cores must be >= 1")
    return max(1.0, ranks / cores)


def sync_delay(probe_factor: float, ranks: int, cores: int, probe_step_s: float) -> float:
    """Seconds each synchronisation costs with ``ranks`` ranks on ``cores`` cores, from
    the probe: what its slowdown ``probe_factor`` (steps of ``probe_step_s`` seconds of
    one rank's compute, one collective each) reads beyond processor sharing,
    δ = max(0, s_probe − max(1, p/C))·w."""
    if probe_step_s <= 0:
        raise ValueError("probe_step_s must be > 0")
    return max(0.0, probe_factor - sharing_factor(ranks, cores)) * probe_step_s


def phase_factor(compute_s: float, syncs: int, ranks: int, cores: int, delay_s: float) -> float:
    """Slowdown of ``compute_s`` seconds of one rank's compute (measured alone) split by
    ``syncs`` collectives into phases that every rank runs at once:
    max(1, p/C) + syncs·δ/compute_s. With no compute or no synchronisation, only the
    sharing factor."""
    share = sharing_factor(ranks, cores)
    if compute_s <= 0 or syncs <= 0 or ranks <= 1:
        return share
    return share + syncs * delay_s / compute_s


@dataclass(frozen=True)
class CoreSharing:
    """The calibration of contention on one machine.

    Attributes:
        cores: cores the ranks share (C).
        probe_step_s: one rank's probe step alone (w), seconds.
        probe_slowdown: the probe's measured slowdown per rank count (p → s_probe(p)).
    """

    cores: int
    probe_step_s: float
    probe_slowdown: Mapping[int, float] = field(default_factory=dict)

    @classmethod
    def calibrated(cls, cores: int | None, probe_step_s: float | None,
                   probe_slowdown: Mapping[int, float] | None) -> CoreSharing | None:
        """The model from a hardware file's fields (``concurrent_devices``,
        ``probe_step_s``, ``compute_slowdown``); None unless all three are there."""
        if not (cores and probe_step_s and probe_slowdown):
            return None
        return cls(int(cores), float(probe_step_s),
                   {int(k): float(v) for k, v in probe_slowdown.items()})

    def delay(self, ranks: int) -> float:
        """δ(p): from the probe at p; between probed counts, linear in p; beyond the
        largest, that count's δ scaled by p/p_max (one more rank to wait for per rank);
        0 for one rank or without a probe."""
        pts = sorted((int(p), self._delay_at(int(p))) for p in self.probe_slowdown)
        pts = [(1, 0.0), *[(p, d) for p, d in pts if p > 1]]
        if ranks <= 1 or len(pts) == 1:
            return 0.0
        for (p0, d0), (p1, d1) in zip(pts, pts[1:], strict=False):
            if ranks <= p1:
                return d0 + (d1 - d0) * (ranks - p0) / (p1 - p0)
        p_max, d_max = pts[-1]
        return d_max * ranks / p_max

    def _delay_at(self, p: int) -> float:
        return sync_delay(float(self.probe_slowdown[p]), p, self.cores, self.probe_step_s)

    def factor(self, ranks: int, compute_s: float, syncs: int) -> float:
        """Slowdown of a step's ``compute_s`` seconds (one rank alone) with ``syncs``
        collectives per step at ``ranks`` ranks (:func:`phase_factor`)."""
        return phase_factor(compute_s, syncs, ranks, self.cores, self.delay(ranks))


def cores_rate(by_ranks: Mapping[int, float], ranks: int) -> float:
    """Seconds per byte that ``ranks`` ranks' collective sustains on the cores alone, from
    ``by_ranks`` (p → s/byte measured with no link in the way): at a measured count as
    measured; between two, linear in p; beyond the largest, in proportion to p (each
    further rank shares the same cores: processor sharing); below the smallest, the
    smallest's."""
    pts = sorted((int(p), float(b)) for p, b in by_ranks.items())
    if not pts:
        raise ValueError("no measured rank count")
    for (p0, b0), (p1, b1) in zip(pts, pts[1:], strict=False):
        if p0 <= ranks <= p1:
            return b0 + (b1 - b0) * (ranks - p0) / (p1 - p0)
    p_max, b_max = pts[-1]
    return b_max * ranks / p_max if ranks > p_max else pts[0][1]


def cores_bound_rates(op_beta: Mapping[str, float], cores_beta: Mapping[str, Mapping[int, float]],
                      ranks: int, calibrated_ranks: int) -> dict[str, float]:
    """Per-op rates (s/byte, ``op_beta``) timed over a link at ``calibrated_ranks`` ranks,
    as ``ranks`` ranks see them where the ranks share the cores.

    A collective's bytes are copied and reduced by the ranks' cores. Where p ranks share
    fewer cores (a virtual cluster, an oversubscribed node), the rate the cores alone
    sustain (``cores_beta``: the op timed on loopback at several rank counts, no link in
    the way) falls as p grows, and beyond some p it holds up the link. What the cores
    cost per byte at ``ranks`` beyond their cost at the calibration's count is added to
    the op's timed rate: max(0, c(p) − c(p_cal)) (:func:`cores_rate`); at fewer ranks
    than the calibration's the rate stays as timed (a link's rate is not beaten by
    faster cores). Ops without a loopback timing: as timed."""
    out = dict(op_beta)
    for op, rate in op_beta.items():
        table = cores_beta.get(op)
        if table:
            out[op] = rate + max(0.0, cores_rate(table, ranks) - cores_rate(table, calibrated_ranks))
    return out


def link_alpha(alpha_fit: float, sharing: CoreSharing, ranks: int) -> float:
    """The link's latency α from a fit of collectives timed with ``ranks`` ranks sharing
    ``sharing.cores`` cores: the fit reads each collective's scheduling delay δ(ranks)
    (a rank waiting for a core) as latency, and the model charges that delay to compute
    (:meth:`CoreSharing.factor`), so it is taken out here to be counted once:
    max(0, α_fit − δ(ranks)). Ranks that do not oversubscribe the cores: α_fit as is."""
    return max(0.0, alpha_fit - sharing.delay(ranks))
