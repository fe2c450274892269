"""Predict step time and scaling efficiency from a step profile and a hardware profile.

Step model (per rank, data parallel):

    T(p) = T_compute(p) + T_exposed(p) + T_interference + T_straggler + T_input

(the last three: :func:`step_terms`, each priced by a function of
:mod:`scidl.scaling.costmodel` with its source and the parameter ``scidl profile`` measures).

Gradient buckets b₁…b_K (backward order) become ready during the backward pass at
``t_i = T_fwd + T_bwd·(bytes of b₁…b_i)/(all bytes)``; one communication channel reduces
them in order, ``f_i = max(t_i, f_{i−1}) + c_i`` with ``c_i`` the collective's cost from
:mod:`scidl.scaling.costmodel`. The exposed communication is
``ψ·max(0, f_K − T_compute) + (1−ψ)·Σc_i`` where ψ (``Hardware.overlap``) is how much of
the ideal overlap the stack achieves. Efficiency: weak E = T(1)/T(p); strong
E = T(1)/(p·T(p)) with the per-rank compute divided by p.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from scidl.scaling.costmodel import (
    Compression,
    LinkCost,
    Topology,
    burst_saving,
    compute_at_batch,
    gradient_comm_time,
    interference_time,
    io_stall,
    io_time,
    straggler_time,
    timeline_ready_times,
)
from scidl.scaling.hardware import Hardware

DDP_FIRST_BUCKET = 2**20


class StepProfile(BaseModel):
    """What one training step costs on one device."""

    model_config = ConfigDict(extra="forbid")

    compute_s: float = Field(..., gt=0, description="forward+backward+update per step (s), 1 rank")
    grad_bytes: float = Field(..., ge=0, description="fp32 gradient bytes reduced per step")
    bucket_bytes: list[float] | None = Field(
        default=None, description="gradient buckets in backward order (None: split by fusion size)"
    )
    bucket_shapes: list[list[list[int]]] | None = Field(
        default=None,
        description="parameter shapes of each bucket (parallel to bucket_bytes), for "
        "strategies whose traffic depends on them (powersgd) or that regroup (grouped)",
    )
    backward_fraction: float = Field(
        default=2 / 3, gt=0, le=1, description="share of compute in backward"
    )
    samples_per_step: int = Field(default=1, ge=1, description="per-rank batch at p = 1")
    flops_per_step: float | None = Field(
        default=None, gt=0, description="model FLOPs per step if known"
    )
    device_flops: float | None = Field(
        default=None, gt=0, description="sustained FLOP/s of the device the profile was measured on"
    )
    overlap_measured: float | None = Field(
        default=None, description="hidden share of comm, if measured"
    )
    measured_here: bool = Field(
        default=False,
        description="compute_s was measured on this machine (a run folder): it is moved "
        "to other hardware by FLOP/s ratios; otherwise compute_s is the target's",
    )
    source: str = Field(default="", description="run folder or assumption set it came from")
    measured_ranks: int = Field(
        default=1, ge=1,
        description="processes of the run it was measured on; above 1, compute_s is one "
        "rank's compute with that many ranks busy and the measured_* fields hold the "
        "communication that run saw",
    )
    measured_step_s: float | None = Field(
        default=None, ge=0, description="median step time of the measured run (s)")
    measured_comm_s: float | None = Field(
        default=None, ge=0, description="median gradient communication per step of the measured run (s)")
    measured_exposed_comm_s: float | None = Field(
        default=None, ge=0,
        description="median communication per step not hidden behind compute, measured (s)")
    step_cv: float | None = Field(
        default=None, ge=0,
        description="per-rank step-time spread relative to the median (1.4826·MAD/median of "
        "one rank's step times): the straggler term's σ = step_cv × compute (None: the "
        "hardware's straggler_cv)")
    batch_curve: list[tuple[float, float]] | None = Field(
        default=None,
        description="(local batch, compute s per step) measured on the profile's device; "
        "strong scaling reads the compute at the shrunk local batch from it")
    interference: float | None = Field(
        default=None, ge=1,
        description="backward time with concurrent collectives / without (≥ 1; None: the "
        "hardware's interference)")
    loader_s: float | None = Field(
        default=None, ge=0, description="seconds per step the data loader took (one rank)")
    input_bytes_per_step: float | None = Field(
        default=None, ge=0, description="bytes of input one rank reads per step")
    codec_fraction: dict[str, float] | None = Field(
        default=None,
        description="compute each comm strategy adds per step (compression, decompression, "
        "error feedback) as a fraction of compute_s, by canonical --comm spec (measured by "
        "`scidl profile --comm`; a strategy not listed adds none)")
    bucket_ready: list[float] | None = Field(
        default=None,
        description="recorded bucket timeline: each bucket's ready time as a fraction of "
        "the backward pass (parallel to bucket_bytes; None: in proportion to bytes)")


def per_rank_profile(profile: StepProfile, hw: Hardware, mode: str = "weak"
                     ) -> tuple[StepProfile, list[str]]:
    """The profile as one rank's compute, and notes saying how it was obtained.

    A profile measured on one process is returned as it is. One measured on N processes
    keeps its per-rank compute (``step − exposed communication``) and not its measured
    communication, which belongs to the machine it ran on: communication is modelled on
    ``hw`` (see :func:`measured_comparison` for the measured numbers beside the
    prediction). When ``hw`` was measured on this same machine and holds the slowdown
    of N busy ranks, the compute is divided by it, so it is not counted twice at p = N.
    Strong scaling keeps the measured run's global batch (N × its per-rank batch), whose
    one-rank compute is taken as N × one rank's, so the point p = N is the measured run.
    """
    n = profile.measured_ranks
    if n <= 1:
        return profile, _batch_curve_note(profile, mode)
    notes = []
    comm = profile.measured_comm_s
    measured = (f"{comm:.4g} s communication per step, {profile.measured_exposed_comm_s or 0:.4g} s"
                " exposed" if comm is not None else "its communication")
    slow = hw.compute_slowdown.get(n) if profile.measured_here and hw.measured_here else None
    if slow and slow > 0:
        profile = profile.model_copy(update={"compute_s": profile.compute_s / slow})
        notes.append(f"profile measured on {n} processes: one rank's compute "
                     f"({profile.compute_s * slow:.4g} s per step with {n} ranks busy) divided "
                     f"by the measured slowdown x{slow:.2f} of {n} busy ranks")
    else:
        notes.append(f"profile measured on {n} processes: one rank's compute "
                     f"({profile.compute_s:.4g} s per step, measured with {n} ranks busy) "
                     "is used as the compute of every rank")
    notes.append(f"the profile's measured communication ({measured} at p = {n}) is not "
                 f"reused: communication is modelled on {hw.name}")
    notes += _batch_curve_note(profile, mode)
    if mode == "strong":
        profile = profile.model_copy(update={
            "compute_s": profile.compute_s * n, "samples_per_step": profile.samples_per_step * n,
            "flops_per_step": profile.flops_per_step * n if profile.flops_per_step else None})
        notes.append(f"strong scaling of the measured run's global batch "
                     f"({profile.samples_per_step} samples per step, {n} x its per-rank batch)")
    return profile, notes


def _batch_curve_note(profile: StepProfile, mode: str) -> list[str]:
    """A note for strong scaling without a measured batch curve: compute is then taken
    as proportional to the local batch (no fixed part per step), an optimistic bound."""
    if mode != "strong" or profile.batch_curve:
        return []
    return ["strong scaling without a measured batch curve: compute is taken as "
            "proportional to the local batch (no fixed part per step), which is optimistic "
            "where small local batches use the device less well; `scidl profile --batches "
            "8,16,32` measures the curve"]


def measured_comparison(profile: StepProfile, curve: Sequence[dict[str, Any]]
                        ) -> dict[str, Any] | None:
    """Measured vs predicted step at the process count a multi-process profile ran on
    (None for a one-process profile, without a measured step, or when that count is not
    on the curve)."""
    n = profile.measured_ranks
    if n <= 1 or profile.measured_step_s is None:
        return None
    pt = next((q for q in curve if q["ranks"] == n), None)
    if pt is None:
        return None
    return {"ranks": n, "measured_step_s": profile.measured_step_s,
            "measured_comm_s": profile.measured_comm_s,
            "measured_exposed_comm_s": profile.measured_exposed_comm_s,
            "predicted_step_s": pt["step_s"], "predicted_comm_s": pt["comm_s"],
            "predicted_exposed_comm_s": pt["exposed_comm_s"]}


def split_buckets(grad_bytes: float, cap: float, first: float = DDP_FIRST_BUCKET) -> list[float]:
    """Split ``grad_bytes`` into buckets: a first small one (DDP: 1 MiB), then ``cap``-sized."""
    if grad_bytes <= 0:
        return []
    out = [min(first, grad_bytes)]
    rest = grad_bytes - out[0]
    while rest > 0:
        out.append(min(cap, rest))
        rest -= out[-1]
    return out


def compute_alone(profile: StepProfile, hw: Hardware, p: int, mode: str) -> float:
    """Per-rank compute seconds per step on ``hw`` at ``p`` ranks, before contention.

    A time measured on another device is moved to ``hw`` by the ratio of sustained
    FLOP/s (or computed from ``flops_per_step``); strong scaling divides it by p (or
    reads the batch-efficiency curve at the local batch).
    """
    t = profile.compute_s
    if not hw.measured_here and hw.sustained_flops:
        if profile.flops_per_step:
            t = profile.flops_per_step / hw.sustained_flops
        elif profile.device_flops:
            t = profile.compute_s * profile.device_flops / hw.sustained_flops
    if mode == "strong":
        b = profile.samples_per_step
        if profile.batch_curve and p > 1:
            t *= compute_at_batch(b / p, profile.batch_curve) / compute_at_batch(
                b, profile.batch_curve)
        else:
            t /= p
    return t


def compute_time(profile: StepProfile, hw: Hardware, p: int, mode: str,
                 slow: float | None = None) -> float:
    """Per-rank compute seconds per step on ``hw`` at ``p`` ranks: :func:`compute_alone`
    times the contention factor ``slow`` (default: the measured factor,
    :func:`contention` without the step's compute; :func:`predict_point` passes the
    contention model's for the step's collectives)."""
    t = compute_alone(profile, hw, p, mode)
    return t * (contention(hw, p) if slow is None else slow)


def contention(hw: Hardware, p: int, compute_s: float | None = None, syncs: int = 0) -> float:
    """Factor by which compute slows with p ranks busy.

    With a calibrated contention model (``hw.compute_slowdown``, ``hw.probe_step_s`` and
    the cores ``hw.concurrent_devices``): processor sharing max(1, p/C) plus the probe's
    delay per collective, ``syncs`` of them spread over ``compute_s`` seconds of one
    rank's compute (:mod:`scidl.scaling.contention`). Else the measured
    ``hw.compute_slowdown[p]`` when calibrated, else p/cores beyond
    ``hw.concurrent_devices`` (time-sharing), else 1."""
    if compute_s is not None:
        from scidl.scaling.contention import CoreSharing

        model = CoreSharing.calibrated(hw.concurrent_devices, hw.probe_step_s,
                                       hw.compute_slowdown)
        if model is not None:
            return model.factor(p, compute_s, syncs)
    if p in hw.compute_slowdown:
        return hw.compute_slowdown[p]
    if hw.concurrent_devices and p > hw.concurrent_devices:
        return p / hw.concurrent_devices
    return 1.0


def contention_band(hw: Hardware, p: int, compute_s: float | None = None,
                    syncs: int = 0) -> tuple[float, float]:
    """(low, high) compute slowdown at p from the probe's measured spread
    (``hw.compute_slowdown_range``: the quartiles of its paired ratios), through the same
    model as :func:`contention`; both equal to :func:`contention` where no spread was
    measured. A count between probed ones takes the spread of each probed count's ends."""
    mid = contention(hw, p, compute_s, syncs)
    rng = hw.compute_slowdown_range
    if not rng or not hw.compute_slowdown:
        return mid, mid
    ends = []
    for i in (0, 1):
        probe = {k: (float(rng[k][i]) if k in rng else v) for k, v in hw.compute_slowdown.items()}
        ends.append(contention(hw.model_copy(update={"compute_slowdown": probe}), p,
                               compute_s, syncs))
    return min(mid, *ends), max(mid, *ends)


def sync_count(buckets: Sequence[tuple[float, list[list[int]] | None]], p: int,
               comp: Compression, per_node: int = 1) -> int:
    """Collectives per step, ranks placed ``per_node`` to a node: every bucket's
    collectives waited on in turn (:meth:`Compression.syncs`; the strategy's plan, or
    its phases: ``hierarchical`` on nodes of several ranks waits on three), each one a
    point where every rank must be on a core."""
    if p <= 1:
        return 0
    return sum(comp.syncs(int(b // 4), p, per_node, shapes) for b, shapes in buckets)


def exposed_comm(
    t_fwd: float, t_bwd: float, costs: Sequence[float], sizes: Sequence[float], overlap: float,
    lagged: bool = False, ready_fraction: Sequence[float] | None = None,
) -> float:
    """Exposed seconds of bucketed communication overlapped with the backward pass.

    ``lagged``: a bucket's result is needed only when the same bucket is ready in the
    next step (one step later), not at the end of this backward pass.
    ``ready_fraction``: the recorded bucket timeline (see
    :func:`scidl.scaling.costmodel.timeline_ready_times`).
    """
    total = sum(costs)
    if total <= 0:
        return 0.0
    finish, late = 0.0, 0.0
    readies = timeline_ready_times(t_fwd, t_bwd, ready_fraction, sizes)
    for c, ready in zip(costs, readies, strict=True):
        finish = max(ready, finish) + c
        late = max(late, finish - (t_fwd + t_bwd + ready))
    ideal = late if lagged else max(0.0, finish - (t_fwd + t_bwd))
    return overlap * ideal + (1 - overlap) * total


def comm_buckets(profile: StepProfile, hw: Hardware, comp: Compression
                 ) -> list[tuple[float, list[list[int]] | None]]:
    """(fp32 bytes, parameter shapes or None) of each reduction, in backward order.

    The profile's buckets (else ``grad_bytes`` split at the machine's fusion size); a
    strategy that fuses gradients into groups of its own size regroups the parameters
    (or, without shapes, splits ``grad_bytes`` at that size).
    """
    group = comp.fusion_bytes
    shapes = profile.bucket_shapes
    if group is not None:
        if shapes:
            from scidl.scaling.profile import bucketize_shapes, fp32_bytes

            groups = bucketize_shapes([s for b in shapes for s in b], group)
            return [(float(sum(fp32_bytes(s) for s in g)), g) for g in groups]
        return [(b, None) for b in split_buckets(profile.grad_bytes, group, first=group)]
    sizes = profile.bucket_bytes or split_buckets(profile.grad_bytes, hw.fusion_bytes)
    if shapes and len(shapes) == len(sizes):
        return list(zip(sizes, shapes, strict=True))
    return [(b, None) for b in sizes]


def predict_point(
    profile: StepProfile,
    hw: Hardware,
    p: int,
    *,
    algorithm: str | None = None,
    comp: Compression | None = None,
    mode: str = "weak",
) -> dict[str, Any]:
    """Predicted step breakdown at ``p`` ranks."""
    comp = comp or Compression()
    alg = algorithm or hw.algorithm
    topo = hw.topology(p)
    buckets = comm_buckets(profile, hw, comp)
    alone = compute_alone(profile, hw, p, mode)
    # the strategy's own computation runs between the same collectives as the compute
    codec = codec_fraction(profile, comp) if own_terms(profile, hw) else 0.0
    syncs = sync_count(buckets, p, comp, min(hw.devices_per_node, p))
    slow = contention(hw, p, alone * (1.0 + codec), syncs)
    compute = alone * slow
    sizes = [b for b, _ in buckets]
    costs = [gradient_comm_time(b, p, topo, alg, comp, shapes) for b, shapes in buckets]
    terms = step_terms(profile, hw, p, compute, costs, sizes, comp, mode, slow=slow,
                       burst=link_burst(hw, p, alg, comp, buckets))
    # the probe's measured spread at p moves the compute (and the codec's computation)
    lo, hi = contention_band(hw, p, alone * (1.0 + codec), syncs)
    terms["step_lo_s"] -= max(0.0, slow - lo) * alone * (1.0 + codec)
    terms["step_hi_s"] += max(0.0, hi - slow) * alone * (1.0 + codec)
    batch = profile.samples_per_step
    samples = batch * p if mode == "weak" else batch
    step = terms["step_s"]
    return {
        "ranks": p,
        "compute_s": compute,
        "comm_s": sum(costs),
        "slowdown": slow,
        **terms,
        "samples_per_s": samples / step,
        "buckets": len(sizes),
    }


def link_burst(hw: Hardware, p: int, algorithm: str, comp: Compression,
               buckets: Sequence[tuple[float, Any]]) -> tuple[float, float]:
    """(wire, burst) seconds of the network link at p ranks: the step's collectives priced
    at the link's β alone, and the link's ``burst_bytes``·β; (0, 0) on one node or for a
    link without a burst."""
    level = hw.inter  # the link's own rates: a burst spares the wire, not the cores
    if level is None or level.burst_bytes <= 0 or p <= hw.devices_per_node:
        return 0.0, 0.0
    free = LinkCost(0.0, 0.0, 0.0)
    wire_only = Topology(hw.devices_per_node, free, LinkCost(0.0, level.beta, 0.0))
    wire = sum(gradient_comm_time(b, p, wire_only, algorithm, comp, shapes) for b, shapes in buckets)
    if not level.op_beta or wire <= 0:
        return wire, level.burst_bytes * level.beta
    # at the ops' own measured rates (op_beta): the bytes the bucket passes at once
    # would have cost the step's ops their rate, not β
    own = Topology(hw.devices_per_node, free, LinkCost(0.0, level.beta, 0.0, dict(level.op_beta)))
    wire_own = sum(gradient_comm_time(b, p, own, algorithm, comp, shapes) for b, shapes in buckets)
    return wire_own, level.burst_bytes * level.beta * wire_own / wire


def step_terms(profile: StepProfile, hw: Hardware, p: int, compute: float,
               costs: Sequence[float], sizes: Sequence[float], comp: Compression,
               mode: str = "weak", slow: float | None = None,
               burst: tuple[float, float] = (0.0, 0.0)) -> dict[str, float]:
    """The step's parts at p ranks besides compute and the collectives' own cost.

    exposed communication (bucket timeline), interference (compute slowed while
    communication overlaps it), stragglers (the slowest of p ranks), input stall
    (loader time and file-system contention), their sum with compute as ``step_s``,
    and ``step_lo_s``/``step_hi_s``: the step with compute at ±1 measured spread.
    A profile measured on this machine (``measured_here``) brings its spread and
    interference only to a hardware file calibrated here too; on any other machine
    the hardware file's ``straggler_cv`` and ``interference`` apply. ``slow``: the
    compute's contention factor at p (the codec's computation is slowed alike).
    ``burst``: (wire, burst) seconds of a token-bucket link (:func:`link_burst`): the
    bytes the bucket holds after the step's compute cost nothing (``burst_s``,
    :func:`scidl.scaling.costmodel.burst_saving`).
    """
    t_bwd = compute * profile.backward_fraction
    own_buckets = comp.fusion_bytes is None and profile.bucket_ready is not None
    exposed = exposed_comm(compute - t_bwd, t_bwd, costs, sizes, hw.overlap, comp.lagged,
                           profile.bucket_ready if own_buckets else None)
    hidden = max(0.0, sum(costs) - exposed)
    # the spread and interference a profile measured here belong to this machine: on a
    # machine described by a preset, that machine's own values are used
    own = own_terms(profile, hw)
    busy = profile.interference if own and profile.interference is not None else hw.interference
    interference = interference_time(hidden, t_bwd, busy)
    cv = profile.step_cv if own and profile.step_cv is not None else hw.straggler_cv
    # a measured compute_slowdown[p] is the slowest busy rank's (the probe takes the
    # maximum over the p ranks each round): the wait for the slowest is in it already
    straggler = 0.0 if p in hw.compute_slowdown else straggler_time(p, cv * compute)
    shrink = p if mode == "strong" else 1
    io = io_time((profile.loader_s or 0.0) / shrink, (profile.input_bytes_per_step or 0.0) / shrink,
                 p, hw.fs_bandwidth)
    stall = io_stall(io, compute)
    codec = codec_time(profile, hw, p, comp, slow) if own else 0.0
    saved = min(exposed, burst_saving(burst[0], burst[1], compute + codec))
    exposed -= saved
    step = compute + codec + exposed + interference + straggler + stall
    return {
        "codec_s": codec,
        "burst_s": saved,
        "exposed_comm_s": exposed,
        "interference_s": interference,
        "straggler_s": straggler,
        "io_stall_s": stall,
        "step_s": step,
        "step_lo_s": step - cv * compute,
        "step_hi_s": step + cv * compute,
    }


def own_terms(profile: StepProfile, hw: Hardware) -> bool:
    """Whether the profile's own measured terms (spread, interference, codec) apply on
    ``hw``: not for a profile measured here on a machine described by a preset."""
    return not (profile.measured_here and not hw.measured_here)


def codec_fraction(profile: StepProfile, comp: Compression) -> float:
    """The strategy's own computation as a fraction of the profile's compute (0 when the
    profile did not measure it)."""
    if not profile.codec_fraction:
        return 0.0
    from scidl.scaling.costmodel import spec_of

    return profile.codec_fraction.get(spec_of(comp.config), 0.0)


def codec_time(profile: StepProfile, hw: Hardware, p: int, comp: Compression,
               slow: float | None = None) -> float:
    """Seconds per step the strategy's own computation takes at p ranks: the profile's
    measured fraction of the one-rank compute, slowed as compute is by p busy ranks
    (``slow``, default :func:`contention`; it runs on the same cores; Agarwal et al.
    2022, "On the utility of gradient compression in distributed training systems",
    MLSys: compression compute often outweighs the bytes it saves). 0 for one rank
    (nothing is reduced) and for a strategy the profile did not measure."""
    if p <= 1:
        return 0.0
    frac = codec_fraction(profile, comp)
    if frac <= 0:
        return 0.0
    return frac * profile.compute_s * (contention(hw, p) if slow is None else slow)


def predict_curve(
    profile: StepProfile,
    hw: Hardware,
    ranks: Sequence[int],
    *,
    algorithm: str | None = None,
    comp: Compression | None = None,
    mode: str = "weak",
) -> list[dict[str, Any]]:
    """Predicted points for every p in ``ranks`` with efficiency relative to p = 1."""
    base = predict_point(profile, hw, 1, algorithm=algorithm, comp=comp, mode=mode)["step_s"]
    out = []
    for p in ranks:
        pt = predict_point(profile, hw, p, algorithm=algorithm, comp=comp, mode=mode)
        denom = pt["step_s"] if mode == "weak" else p * pt["step_s"]
        pt["efficiency"] = base / denom if denom > 0 else math.nan
        # band: this p's step one measured spread slower / faster against the median
        # baseline (E(1) = 1 by definition)
        scale = 1 if mode == "weak" else p
        if p == 1:
            pt["efficiency_lo"] = pt["efficiency_hi"] = pt["efficiency"]
        else:
            pt["efficiency_lo"] = base / (scale * pt["step_hi_s"]) if pt["step_hi_s"] > 0 else math.nan
            pt["efficiency_hi"] = base / (scale * pt["step_lo_s"]) if pt["step_lo_s"] > 0 else math.nan
        out.append(pt)
    return out


def parse_ranks(text: str) -> list[int]:
    """``"1,6,...,27600"`` → [1, 6, 12, 24, ... , 27600] (doubling between the ends);
    ``"1,2,4"`` → [1, 2, 4]."""
    parts = [s.strip() for s in text.split(",") if s.strip()]
    if "..." in parts:
        i = parts.index("...")
        if i < 2 or i != len(parts) - 2:
            raise ValueError(f"ranks {text!r}: use A,B,...,Z (doubling from B up to Z)")
        head = [int(x) for x in parts[:i]]
        last = int(parts[-1])
        vals = list(head)
        v = head[-1]
        while v * 2 < last:
            v *= 2
            vals.append(v)
        vals.append(last)
    else:
        vals = [int(x) for x in parts]
    if not vals or any(v < 1 for v in vals):
        raise ValueError(f"ranks {text!r}: need positive integers")
    return sorted(set(vals))


RECOMMEND_COMMS = ("dense", "hierarchical", "fp16", "bf16", "topk:0.01", "powersgd:4")
LOSSY = {"topk", "powersgd"}


def _layouts(g: int) -> list[int]:
    """Ranks per node to try: every divisor of the node's device count."""
    return [d for d in range(1, g + 1) if g % d == 0]


def _reason(pt: dict[str, Any], kind: str, alg: str, per_node: int, nodes: int) -> str:
    step = pt["step_s"] or 1.0
    parts = [("exposed communication", pt["exposed_comm_s"]),
             ("stragglers", pt.get("straggler_s", 0.0)),
             ("interference", pt.get("interference_s", 0.0)),
             ("input stall", pt.get("io_stall_s", 0.0))]
    name, worst = max(parts, key=lambda x: x[1])
    lost = f"{name} {worst / step:.0%} of the step" if worst > 0 else "nothing lost beyond compute"
    hidden = max(0.0, pt["comm_s"] - pt["exposed_comm_s"])
    text = (f"{nodes} node(s) x {per_node} rank(s), {alg}: {lost}; "
            f"{hidden / pt['comm_s']:.0%} of {pt['comm_s'] * 1e3:.3g} ms communication hidden"
            if pt["comm_s"] > 0 else f"{nodes} node(s) x {per_node} rank(s): no communication")
    if kind in LOSSY:
        text += "; lossy compression: check convergence (error feedback)"
    elif kind in ("fp16", "bf16"):
        text += "; reduced-precision gradients"
    return text


def recommend(profile: StepProfile, hw: Hardware, p: int, *, mode: str = "weak",
              comms: Sequence[str] = RECOMMEND_COMMS, algorithm: str | None = None
              ) -> list[dict[str, Any]]:
    """Comm strategies × node layouts at ``p`` ranks, best expected efficiency first.

    Layouts place 1…g ranks on each node of ``hw`` (g = its devices per node; fewer
    ranks per node use more nodes and give each rank more of the node's network). Each
    entry: ``comm``, ``algorithm``, ``ranks_per_node``, ``nodes``, ``efficiency``,
    ``step_s`` and a one-line ``reason`` naming the largest cost besides compute.
    """
    from scidl.scaling.costmodel import parse_comm

    out = []
    for spec in comms:
        comp, forced = parse_comm(spec)
        alg = forced or algorithm or hw.algorithm
        for g in _layouts(hw.devices_per_node):
            if g > p:
                continue
            layout = hw.model_copy(update={"devices_per_node": g})
            pts = predict_curve(profile, layout, [1, p], algorithm=alg, comp=comp, mode=mode)
            pt = pts[-1]
            nodes = math.ceil(p / g)
            out.append({"comm": spec, "algorithm": alg, "ranks_per_node": g, "nodes": nodes,
                        "efficiency": pt["efficiency"], "step_s": pt["step_s"],
                        "efficiency_lo": pt["efficiency_lo"], "efficiency_hi": pt["efficiency_hi"],
                        "reason": _reason(pt, comp.kind, alg, g, nodes)})
    # ties (same efficiency) go to the denser layout: fewer nodes for the same result
    out.sort(key=lambda r: (-round(r["efficiency"], 3), r["nodes"], r["comm"] != "dense"))
    return out
