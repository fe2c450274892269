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


def shared_op_rates(op_beta: Mapping[str, float], ranks: int, calibrated_ranks: int,
                    cores: int) -> dict[str, float]:
    """Per-op rates (s/byte, :class:`scidl.scaling.costmodel.LinkCost` ``op_beta``) at
    ``ranks`` ranks sharing ``cores`` cores, from rates timed at ``calibrated_ranks``.

    A rate for another element type (``allreduce:float16``) above its op's float32 rate
    (``allreduce``) costs the excess in reduction arithmetic on the ranks' cores (gloo on
    CPU sums float16 element by element through float32): computation, which p ranks on C
    cores share as they share any compute, max(1, p/C) (:func:`sharing_factor`). The
    excess is scaled from the calibration's sharing to that at ``ranks``; the float32
    rates, whose reduction is a small part of their cost, and any rate without a float32
    one to compare with stay as timed. Ranks that never oversubscribe the cores (a real
    cluster, one rank per core): unchanged."""
    scale = sharing_factor(ranks, cores) / sharing_factor(calibrated_ranks, cores)
    out = dict(op_beta)
    for key, rate in op_beta.items():
        op, _, dtype = key.partition(":")
        base = op_beta.get(op)
        if dtype and base is not None and rate > base:
            out[key] = base + (rate - base) * scale
    return out


def link_alpha(alpha_fit: float, sharing: CoreSharing, ranks: int) -> float:
    """The link's latency α from a fit of collectives timed with ``ranks`` ranks sharing
    ``sharing.cores`` cores: the fit reads each collective's scheduling delay δ(ranks)
    (a rank waiting for a core) as latency, and the model charges that delay to compute
    (:meth:`CoreSharing.factor`), so it is taken out here to be counted once:
    max(0, α_fit − δ(ranks)). Ranks that do not oversubscribe the cores: α_fit as is."""
    return max(0.0, alpha_fit - sharing.delay(ranks))
