"""Throughput of SciDL's Wisdom–Holman integrator vs REBOUND's WHFast, side by side.

Both integrate star + two-planet systems (``random_systems``: the training-data
distribution of the ``nbody`` workload) with the same map: WHFast's Jacobi split,
drift–kick–drift, no symplectic corrector, step = inner period / 40, float64, one
process. SciDL advances a whole batch of B systems per call (arrays (B, N, 3)); REBOUND
integrates one ``Simulation`` per system in C (``safe_mode = 0``: merged half drifts, as
SciDL does). The figure is system-steps per second (systems × steps ÷ wall time).
Timings are interleaved: each repeat times every SciDL batch size and REBOUND once, in
turn, so machine load hits all alike; the ratio SciDL ÷ REBOUND is formed per repeat and
its median reported. The machine's load average before and after is recorded. A check
that both codes compute the same map: the largest position difference between them for
the first system after the timed steps. Accuracy at the same step: the largest relative
energy error over 10^5 steps of the reference system (``reference_system``) for SciDL's
``whfast`` and ``wh91`` schemes and REBOUND's WHFast, and the final position differences.

    python benchmarks/nbody_integrator.py [--repeats 5] [--batches 1 16 256 4096]

Writes benchmarks/results/nbody_integrator.json (render it into docs/workloads/nbody.md
with ``python scripts/render_docs.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from scidl.workloads.nbody import small
from scidl.workloads.nbody.data import random_systems
from scidl.workloads.nbody.wh import WHState, integrate

H = 2 * math.pi / 40
OUT = Path(__file__).resolve().parent / "results" / "nbody_integrator.json"


def steps_for(batch: int) -> int:
    """Steps per timing: about 2·10^5 system-steps, at least 50 steps."""
    return max(50, min(20_000, 200_000 // batch))


def rebound_sim(x: np.ndarray, v: np.ndarray, m: np.ndarray) -> Any:
    import rebound

    sim = rebound.Simulation()
    sim.G = 1.0
    for i in range(m.shape[0]):
        sim.add(m=m[i], x=x[i, 0], y=x[i, 1], z=x[i, 2], vx=v[i, 0], vy=v[i, 1], vz=v[i, 2])
    sim.integrator = "whfast"
    sim.integrator.coordinates = "jacobi"
    sim.integrator.corrector = 0
    sim.integrator.safe_mode = 0
    sim.dt = H
    return sim


def time_scidl(x: np.ndarray, v: np.ndarray, m: np.ndarray, steps: int,
               numpy_loop: bool = False) -> tuple[float, np.ndarray]:
    s0 = WHState.from_inertial(x, v, m)
    saved = small.MAX_ORBITS
    if numpy_loop:
        small.MAX_ORBITS = 0
    try:
        t0 = time.perf_counter()
        s = integrate(s0, H, steps)
        wall = time.perf_counter() - t0
    finally:
        small.MAX_ORBITS = saved
    return wall, s.inertial()[0]


def time_rebound(x: np.ndarray, v: np.ndarray, m: np.ndarray, steps: int,
                 n_sims: int) -> tuple[float, np.ndarray]:
    sims = [rebound_sim(x[i], v[i], m[i]) for i in range(n_sims)]
    t0 = time.perf_counter()
    for sim in sims:
        sim.steps(steps)
    wall = time.perf_counter() - t0
    for sim in sims:
        sim.synchronize()
    return wall, np.array([[p.x, p.y, p.z] for p in sims[0].particles])


def energy_errors(steps: int, every: int = 1000) -> dict[str, Any]:
    """Max |ΔE/E| over ``steps`` steps of the reference star + two planets (Jupiter and
    Saturn-like), for SciDL's two schemes and REBOUND's WHFast, and the final position
    difference SciDL (whfast) vs REBOUND."""
    from scidl.workloads.nbody.study import reference_system

    x, v, m = reference_system()
    out: dict[str, Any] = {"steps": steps}
    pos: dict[str, np.ndarray] = {}
    for scheme in ("whfast", "wh91"):
        s0 = WHState.from_inertial(x, v, m, scheme)
        e0 = s0.energy()[0]
        errs: list[float] = []
        s = integrate(s0, H, steps, record_every=every,
                      on_record=lambda _, st, errs=errs, e0=e0: errs.append(abs((st.energy()[0] - e0) / e0)))
        out[f"scidl_{scheme}_dE_max"] = max(errs)
        pos[scheme] = s.inertial()[0][0]
    sim = rebound_sim(x[0], v[0], m[0])
    sim.integrator.safe_mode = 1
    e0 = sim.energy()
    errs = [0.0]
    for _ in range(steps // every):
        sim.steps(every)
        errs.append(abs((sim.energy() - e0) / e0))
    out["rebound_whfast_dE_max"] = max(errs)
    rb = np.array([[p.x, p.y, p.z] for p in sim.particles])
    out["pos_diff_scidl_whfast_vs_rebound"] = float(np.abs(pos["whfast"] - rb).max())
    out["pos_diff_scidl_wh91_vs_rebound"] = float(np.abs(pos["wh91"] - rb).max())
    return out


def run(batches: list[int], repeats: int, rebound_steps: int, rebound_sims: int,
        energy_steps: int) -> dict[str, Any]:
    import rebound

    x, v, m = random_systems(max(batches), 2, np.random.default_rng(0))
    cases = [(b, False) for b in batches] + ([(1, True)] if 1 in batches else [])
    rates: dict[str, list[float]] = {f"{b}{'_numpy' if npl else ''}": [] for b, npl in cases}
    ratios: dict[str, list[float]] = {k: [] for k in rates}
    rb_rates: list[float] = []
    pos_diff: dict[str, float] = {}
    load_before = os.getloadavg()
    for _ in range(repeats):
        wall, rb_pos = time_rebound(x, v, m, rebound_steps, rebound_sims)
        rb_rate = rebound_sims * rebound_steps / wall
        rb_rates.append(rb_rate)
        for b, npl in cases:
            key = f"{b}{'_numpy' if npl else ''}"
            steps = steps_for(b) // (20 if npl else 1)
            wall, pos = time_scidl(x[:b], v[:b], m[:b], steps, numpy_loop=npl)
            rate = b * steps / wall
            rates[key].append(rate)
            ratios[key].append(rate / rb_rate)
            if steps == rebound_steps:
                pos_diff[key] = float(np.abs(pos[0] - rb_pos).max())
    load_after = os.getloadavg()
    rows = []
    for b, npl in cases:
        key = f"{b}{'_numpy' if npl else ''}"
        rows.append({
            "batch": b,
            "loop": "numpy" if (npl or b * 2 > small.MAX_ORBITS) else "python",
            "steps": steps_for(b) // (20 if npl else 1),
            "system_steps_per_s": statistics.median(rates[key]),
            "ratio_to_rebound": statistics.median(ratios[key]),
            "ratio_min": min(ratios[key]),
            "ratio_max": max(ratios[key]),
            "us_per_step": 1e6 * b / statistics.median(rates[key]),
        })
    return {
        "benchmark": "nbody_integrator",
        "system": "star + 2 planets (random_systems, seed 0), step = inner period / 40",
        "scheme": "whfast (Jacobi, drift-kick-drift, no corrector)",
        "rows": rows,
        "rebound": {"system_steps_per_s": statistics.median(rb_rates), "steps": rebound_steps,
                    "simulations": rebound_sims, "version": rebound.__version__,
                    "safe_mode": 0},
        "same_map_max_pos_diff": pos_diff,
        "energy": energy_errors(energy_steps),
        "repeats": repeats,
        "load_avg": {"before": list(load_before), "after": list(load_after)},
        "versions": {"numpy": np.__version__, "rebound": rebound.__version__,
                     "python": sys.version.split()[0]},
        "hardware": {"machine": platform.machine(), "cpus": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/nbody_integrator.py " + " ".join(sys.argv[1:]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256, 4096])
    ap.add_argument("--rebound-steps", type=int, default=20_000)
    ap.add_argument("--rebound-sims", type=int, default=8, help="systems REBOUND integrates per repeat")
    ap.add_argument("--energy-steps", type=int, default=100_000)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    res = run(args.batches, args.repeats, args.rebound_steps, args.rebound_sims, args.energy_steps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    for r in res["rows"]:
        print(f"batch {r['batch']:5d} ({r['loop']}): {r['system_steps_per_s']:12.0f} system-steps/s, "
              f"{r['ratio_to_rebound']:.3f} x REBOUND")
    print(f"REBOUND: {res['rebound']['system_steps_per_s']:.0f} system-steps/s; load {res['load_avg']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
