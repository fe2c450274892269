"""The N-body workload's picture of a trained kick network: the test system (star and two
planets, :func:`~scidl.workloads.nbody.study.reference_system`) integrated with the
learned kick and with the exact one, orbits in the plane and relative energy error."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from torch import nn

from scidl.runtime.plotting import caption_text, finish, new_figure, provenance
from scidl.workloads.nbody.study import H_STEP, neural_kick, reference_system, run_long
from scidl.workloads.nbody.wh import interaction_kick

__all__ = ["orbits_picture"]

INNER_PERIOD = 2.0 * math.pi  # a = 1 around a unit star, G = 1


def orbits_picture(model: nn.Module, path: Path, steps: int = 400, model_name: str = "",
                   scheme: str = "whfast") -> Path:
    """Orbits (x, y) of the planets over ``steps`` Wisdom–Holman steps with the learned
    kick (dashed) and the exact kick (solid), and ``|E(t) - E(0)| / |E(0)|`` of both on
    a log axis. ``model`` is cast to float64 on the CPU (pass a copy)."""
    x, v, m = reference_system()
    runs = {"exact kick (classical WH)": run_long(interaction_kick, x, v, m, steps, n_records=steps,
                                                  scheme=scheme),
            "learned kick": run_long(neural_kick(model.cpu()), x, v, m, steps, n_records=steps,
                                     scheme=scheme)}
    fig = new_figure((11.0, 5.6))
    ax_orb, ax_e = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.25]})
    styles = {"exact kick (classical WH)": ("-", 1.6, 0.55), "learned kick": ("--", 1.1, 1.0)}
    for name, rec in runs.items():
        ls, lw, alpha = styles[name]
        pos = rec["positions"][:, 0]  # (records, bodies, 3) of the one system
        for b in range(1, pos.shape[1]):
            ax_orb.plot(pos[:, b, 0], pos[:, b, 1], ls=ls, lw=lw, alpha=alpha, color=f"C{b - 1}",
                        label=f"planet {b}, {name}")
        t = np.asarray(rec["steps"]) * H_STEP / INNER_PERIOD
        de = np.abs(np.asarray(rec["dE"])[0])
        ax_e.plot(t[1:], np.maximum(de[1:], 1e-17), ls=ls, lw=lw,
                  color="k" if name.startswith("exact") else "C3", label=name)
    ax_orb.plot([0], [0], "*", color="orange", ms=12, label="star")
    ax_orb.set_aspect("equal", adjustable="datalim")
    ax_orb.set_xlabel("x (inner semi-major axis)")
    ax_orb.set_ylabel("y (inner semi-major axis)")
    ax_orb.set_title("orbits in the plane")
    ax_orb.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    ax_orb.grid(alpha=0.3)
    ax_e.set_yscale("log")
    ax_e.set_xlabel("time (inner orbital periods)")
    ax_e.set_ylabel("relative energy error |E(t) − E(0)| / |E(0)|")
    ax_e.set_title("energy error")
    ax_e.legend(fontsize=8)
    ax_e.grid(alpha=0.3)
    worst = {k: float(np.abs(np.asarray(r["dE"])).max()) for k, r in runs.items()}
    what = f" ({model_name})" if model_name else ""
    fig.suptitle(f"N-body test system, {steps} steps of inner period / 40: learned kick{what} "
                 f"max |ΔE/E| = {worst['learned kick']:.2g}, exact {worst['exact kick (classical WH)']:.2g}")
    return finish(fig, path, caption_text(provenance(), "trained"))
