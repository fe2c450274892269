"""Weak and strong scaling runs: the same workload through ``scidl.run`` at several p.

Weak scaling keeps the per-rank batch ``b`` (global batch p·b), strong scaling keeps the
global batch ``B`` (per-rank B/p). From each run's ``metrics.jsonl`` (steps after the
first) the medians of ``step_time_s``, ``comm_s`` (time collectives were in flight) and
``comm_exposed_s`` (time the step waited for them) give

    compute = step − exposed,   hidden comm = comm − exposed,
    E_weak(p) = T(1)/T(p),      E_strong(p) = T(1)/(p·T(p)),

with T the median step time.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from scidl.config import RunConfig
from scidl.runtime.files import atomic_write_text
from scidl.runtime.plotting import provenance
from scidl.scaling.profile import median_of, step_rows, summary_median_step


def point_config(
    cfg: RunConfig, p: int, mode: str, global_batch: int, run_dir: Path
) -> RunConfig:
    """The run config of one scaling point."""
    train = cfg.train.model_copy(update={"log_every": 1})
    if mode == "strong":
        if global_batch % (p * cfg.train.grad_accum):
            raise ValueError(
                f"strong scaling: global batch {global_batch} is not divisible by p={p} "
                f"x grad_accum={cfg.train.grad_accum}"
            )
        train = train.model_copy(update={"global_batch_size": global_batch})
    else:
        train = train.model_copy(update={"global_batch_size": None})
    return cfg.model_copy(update={
        "train": train,
        # one thread per rank at every p (torch's launcher does the same for p > 1), so the
        # p = 1 baseline is not a 2-thread run compared against 1-thread ranks
        "dist": cfg.dist.model_copy(update={
            "nproc": p, "threads_per_proc": cfg.dist.threads_per_proc or 1}),
        "log": cfg.log.model_copy(update={"run_dir": str(run_dir), "progress": False,
                                          "tensorboard": False}),
        "checkpoint": cfg.checkpoint.model_copy(update={"final": False}),
        "comm": cfg.comm.model_copy(update={"timing": True}),  # comm_s, comm_exposed_s per step
    })


def measure_point(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Median step breakdown of one finished run."""
    rows = step_rows(run_dir)
    step = median_of(rows, "step_time_s", summary_median_step(summary))
    comm = median_of(rows, "comm_s")
    has_exposed = any("comm_exposed_s" in r for r in rows)
    exposed = median_of(rows, "comm_exposed_s") if has_exposed else comm
    gb = int(summary.get("global_batch_size") or 0)
    return {
        "ranks": int(summary.get("world_size", 1)),
        "batch_per_rank": int(summary.get("batch_size_per_rank") or 0),
        "global_batch": gb,
        "steps": len(rows),
        "step_s": step,
        "compute_s": max(step - exposed, 0.0),
        "comm_s": comm,
        "exposed_comm_s": exposed,
        "exposed_source": "comm_exposed_s" if has_exposed else "comm_s (assumed not overlapped)",
        "samples_per_s": gb / step if step > 0 else float("nan"),
        "bytes_sent_per_step": median_of(rows, "comm_bytes_sent"),
        "run_dir": str(run_dir),
    }


def _median_point(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """The repeat with the median step time, plus the spread over repeats."""
    ordered = sorted(reps, key=lambda q: q["step_s"])
    pt = dict(ordered[(len(ordered) - 1) // 2])
    pt["repeats"] = len(reps)
    pt["step_s_min"] = ordered[0]["step_s"]
    pt["step_s_max"] = ordered[-1]["step_s"]
    return pt


def add_efficiency(points: list[dict[str, Any]], mode: str) -> None:
    """E(p) relative to the smallest p measured (T(1) when p = 1 is included)."""
    base = min(points, key=lambda q: q["ranks"])
    for q in points:
        ratio = q["ranks"] / base["ranks"]
        denom = q["step_s"] if mode == "weak" else ratio * q["step_s"]
        q["efficiency"] = base["step_s"] / denom if denom > 0 else float("nan")


def run_scaling(
    cfg: RunConfig,
    nprocs: Sequence[int],
    mode: str,
    out: Path,
    *,
    hardware: str | None = None,
    repeats: int = 1,
    runner: Callable[[RunConfig], Any] | None = None,
) -> dict[str, Any]:
    """Run ``cfg`` at every p in ``nprocs``; write ``scaling.json``; return its content.

    With ``repeats`` > 1 the process counts are run in interleaved rounds (1,2,4,1,2,4…)
    so drifts in machine load hit every p alike; each point is the repeat with the
    median step time, with the spread of all repeats (``step_s_min``/``step_s_max``).
    ``hardware`` (a profile written by ``scidl bench-collectives``) adds the cost model's
    prediction of every point from the smallest-p run's measured profile.
    """
    from scidl.scaling.profile import fp32_bytes, model_grad_shapes
    from scidl.train.api import run as run_training

    runner = runner or run_training
    if mode not in ("weak", "strong"):
        raise ValueError(f"mode must be weak or strong, got {mode!r}")
    out.mkdir(parents=True, exist_ok=True)
    global_batch = cfg.train.global_batch_size or cfg.train.batch_size * cfg.train.grad_accum
    param_shapes = model_grad_shapes(cfg.to_dict())
    param_bytes = [fp32_bytes(s) for s in param_shapes]
    runs: dict[int, list[dict[str, Any]]] = {p: [] for p in sorted(set(nprocs))}
    for r in range(repeats):
        for p in runs:
            run_dir = out / (f"p{p}" if repeats == 1 else f"p{p}-r{r}")
            pc = point_config(cfg, p, mode, global_batch, run_dir)
            t0 = time.perf_counter()
            result = runner(pc)
            atomic_write_text(run_dir / "profile.json",
                              json.dumps({"param_bytes": param_bytes, "param_shapes": param_shapes}))
            pt = measure_point(run_dir, result.summary)
            pt["wall_s"] = time.perf_counter() - t0
            runs[p].append(pt)
    points = [_median_point(v) for v in runs.values()]
    add_efficiency(points, mode)
    data: dict[str, Any] = {
        "workload": cfg.workload_label(), "mode": mode, "nproc": sorted(set(nprocs)),
        "repeats": repeats,
        "comm": cfg.comm.strategy, "global_batch_at_p1": global_batch,
        "grad_bytes": sum(param_bytes), "host": platform.node(), "provenance": provenance(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "points": points,
    }
    if hardware:
        data.update(predict_points(points, hardware, mode, comm_spec(cfg)))
    atomic_write_text(out / "scaling.json", json.dumps(data, indent=2))
    return data


def comm_spec(cfg: RunConfig) -> str:
    """The cost model's ``--comm`` spec of the run's strategy and its settings."""
    from scidl.scaling.costmodel import spec_of

    return spec_of(cfg.comm)


def predict_points(
    points: list[dict[str, Any]], hardware: str, mode: str, comm: str
) -> dict[str, Any]:
    """Cost-model prediction of every measured point from the smallest-p run's profile."""
    from scidl.scaling.costmodel import parse_comm
    from scidl.scaling.hardware import load_hardware
    from scidl.scaling.predict import per_rank_profile, predict_curve
    from scidl.scaling.profile import profile_from_run

    hw = load_hardware(hardware)
    base = min(points, key=lambda q: q["ranks"])
    prof, _ = per_rank_profile(profile_from_run(Path(base["run_dir"])), hw, mode)
    comp, forced = parse_comm(comm)
    curve = predict_curve(prof, hw, [q["ranks"] for q in points], algorithm=forced,
                          comp=comp, mode=mode)
    for q, c in zip(points, curve, strict=True):
        q["predicted_step_s"] = c["step_s"]
        q["predicted_compute_s"] = c["compute_s"]
        q["predicted_exposed_comm_s"] = c["exposed_comm_s"]
        q["predicted_samples_per_s"] = c["samples_per_s"]
        q["predicted_efficiency"] = c["efficiency"]
        q["step_error"] = c["step_s"] / q["step_s"] - 1 if q["step_s"] > 0 else float("nan")
    return {"hardware": hw.name, "predicted_comm": comm, "profile": prof.model_dump(mode="json")}
