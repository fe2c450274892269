"""Predict step time and scaling efficiency from a step profile and a hardware profile.

Step model (per rank, data parallel):

    T(p) = T_compute(p) + T_exposed(p)

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

from scidl.scaling.costmodel import Compression, gradient_comm_time
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
        return profile, []
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
    if mode == "strong":
        profile = profile.model_copy(update={
            "compute_s": profile.compute_s * n, "samples_per_step": profile.samples_per_step * n,
            "flops_per_step": profile.flops_per_step * n if profile.flops_per_step else None})
        notes.append(f"strong scaling of the measured run's global batch "
                     f"({profile.samples_per_step} samples per step, {n} x its per-rank batch)")
    return profile, notes


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


def compute_time(profile: StepProfile, hw: Hardware, p: int, mode: str) -> float:
    """Per-rank compute seconds per step on ``hw`` at ``p`` ranks.

    A time measured on another device is moved to ``hw`` by the ratio of sustained
    FLOP/s (or computed from ``flops_per_step``); strong scaling divides it by p; at p
    ranks it is multiplied by the measured ``hw.compute_slowdown[p]`` when calibrated,
    else ranks beyond ``hw.concurrent_devices`` time-share the cores (factor p/cores).
    """
    t = profile.compute_s
    if not hw.measured_here and hw.sustained_flops:
        if profile.flops_per_step:
            t = profile.flops_per_step / hw.sustained_flops
        elif profile.device_flops:
            t = profile.compute_s * profile.device_flops / hw.sustained_flops
    if mode == "strong":
        t /= p
    if p in hw.compute_slowdown:
        t *= hw.compute_slowdown[p]
    elif hw.concurrent_devices and p > hw.concurrent_devices:
        t *= p / hw.concurrent_devices
    return t


def exposed_comm(
    t_fwd: float, t_bwd: float, costs: Sequence[float], sizes: Sequence[float], overlap: float,
    lagged: bool = False,
) -> float:
    """Exposed seconds of bucketed communication overlapped with the backward pass.

    ``lagged``: a bucket's result is needed only when the same bucket is ready in the
    next step (one step later), not at the end of this backward pass.
    """
    total = sum(costs)
    if total <= 0:
        return 0.0
    all_bytes = sum(sizes) or 1.0
    done, finish, late = 0.0, 0.0, 0.0
    for c, s in zip(costs, sizes, strict=True):
        done += s
        ready = t_fwd + t_bwd * done / all_bytes
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
    compute = compute_time(profile, hw, p, mode)
    buckets = comm_buckets(profile, hw, comp)
    sizes = [b for b, _ in buckets]
    costs = [gradient_comm_time(b, p, topo, alg, comp, shapes) for b, shapes in buckets]
    t_bwd = compute * profile.backward_fraction
    exposed = exposed_comm(compute - t_bwd, t_bwd, costs, sizes, hw.overlap, comp.lagged)
    step = compute + exposed
    batch = profile.samples_per_step
    samples = batch * p if mode == "weak" else batch
    return {
        "ranks": p,
        "compute_s": compute,
        "comm_s": sum(costs),
        "exposed_comm_s": exposed,
        "step_s": step,
        "samples_per_s": samples / step,
        "buckets": len(sizes),
    }


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
