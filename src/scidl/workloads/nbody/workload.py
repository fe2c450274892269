"""Neural symplectic N-body integrator (Cai, Portegies Zwart & Podareanu 2021).

The Wisdom–Holman map (:mod:`scidl.workloads.nbody.wh`; WHFast's drift–kick–drift form
by default) splits ``H = H_Kepler + H_int`` in Jacobi coordinates; the Kepler part is solved exactly, the interaction part gives a
kick ``a'_i = -(1/m'_i) dH_int/dq_i``. This workload learns that kick from states generated
by the classical integrator (star + two planets, random masses and orbits):

* ``model: hamiltonian`` — a network for H_int whose autograd gradient is the kick
  (symplectic map);
* ``model: direct`` — the control: a network that outputs the accelerations.

Loss: relative squared kick error per system; headline ``kick_rel_err`` (RMS relative
error on held-out systems). Long integrations (energy error over 10^5 steps, trajectory
error, other masses, a fourth body, time per step) are in :mod:`scidl.workloads.nbody.study`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from scidl.workloads.base import BuildContext, Task, Workload, WorkloadConfig
from scidl.workloads.nbody.data import KickDataset, generate_samples
from scidl.workloads.nbody.nets import DirectKick, HamiltonianKick


class NBodyConfig(WorkloadConfig):
    """Settings of the neural N-body workload (the ``task`` section)."""

    model: Literal["hamiltonian", "direct"] = Field("hamiltonian", description="kick network")
    scheme: Literal["whfast", "wh91"] = Field(
        "whfast",
        description="Wisdom-Holman split and step order of the ground truth and of the learned "
        "kick: whfast (WHFast Jacobi split, drift-kick-drift) or wh91 (Wisdom & Holman 1991 "
        "split, kick-drift-kick)",
    )
    hidden: int = Field(64, ge=1, description="hidden width of the pair network")
    depth: int = Field(2, ge=1, description="hidden layers of the pair network (tanh)")
    n_systems: int = Field(96, ge=2, description="training systems (star + planets)")
    n_planets: int = Field(2, ge=1, description="planets per training system")
    n_steps: int = Field(400, ge=1, description="classical WH steps per training system")
    sample_every: int = Field(4, ge=1, description="keep every k-th state as a sample")
    steps_per_orbit: float = Field(40.0, gt=2, description="WH step = inner period / this")
    mass_range: tuple[float, float] = Field((1e-4, 2e-3), description="planet masses (log-uniform)")
    n_val_systems: int = Field(16, ge=1, description="held-out systems")


def kick_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over systems of |a_pred - a|^2 / |a|^2 (planets only)."""
    pred = model(batch["q"], batch["m"])
    err = (pred[:, 1:] - batch["a"][:, 1:]).pow(2).sum((1, 2))
    return (err / batch["a"][:, 1:].pow(2).sum((1, 2))).mean()


def evaluate(model: nn.Module, data: dict[str, torch.Tensor]) -> dict[str, float]:
    """RMS and 95th-percentile relative kick error on held-out systems."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    pred = model(data["q"].to(device, dtype), data["m"].to(device, dtype)).detach().cpu().double()
    a = data["a"].double()
    rel = ((pred[:, 1:] - a[:, 1:]).pow(2).sum((1, 2)) / a[:, 1:].pow(2).sum((1, 2))).sqrt()
    return {
        "kick_rel_err": float(rel.pow(2).mean().sqrt()),
        "kick_rel_err_p95": float(torch.quantile(rel, 0.95)),
    }


def build_model(cfg: NBodyConfig) -> nn.Module:
    cls = HamiltonianKick if cfg.model == "hamiltonian" else DirectKick
    return cls(cfg.hidden, cfg.depth, cfg.scheme)


class NBody(Workload):
    """Neural interaction kick for the Wisdom–Holman N-body map (Hamiltonian or direct)."""

    name = "nbody"
    description = (
        "Neural symplectic N-body: learned Wisdom-Holman interaction kick (Hamiltonian vs direct)"
    )
    Config = NBodyConfig
    defaults = {
        "train": {"epochs": 60, "batch_size": 128, "eval_every": 0, "log_every": 20},
        "optim": {"name": "adam", "lr": 3e-3, "schedule": "cosine", "min_lr_factor": 0.01},
        "dist": {"nproc": 2},
    }

    def build(self, cfg: WorkloadConfig, ctx: BuildContext) -> Task:
        assert isinstance(cfg, NBodyConfig)
        rng = np.random.default_rng(ctx.seed)
        train = generate_samples(cfg.n_systems, cfg, rng)
        val_cfg = cfg.model_copy(update={"sample_every": cfg.sample_every * 4})
        val = generate_samples(cfg.n_val_systems, val_cfg, rng)
        return Task(
            model=build_model(cfg),
            train_data=KickDataset(train),
            loss=kick_loss,
            evaluate=evaluate,
            val_data=val,
            headline="kick_rel_err",
            higher_is_better=False,
            eval_needs_grad=cfg.model == "hamiltonian",
            loss_needs_grad=cfg.model == "hamiltonian",
        )

    def pictures(self, cfg: WorkloadConfig, model: nn.Module, task: Task,
                 out_dir: Path) -> list[Path]:
        """Orbits of the test system and its energy error, learned vs exact kick
        (``nbody_orbits.png``)."""
        from scidl.workloads.nbody.pictures import orbits_picture

        assert isinstance(cfg, NBodyConfig)
        return [orbits_picture(model, out_dir / "nbody_orbits.png", model_name=cfg.model,
                               scheme=cfg.scheme)]
