"""Neural symplectic N-body integrator (Cai, Portegies Zwart & Podareanu 2021).

The Wisdom–Holman map (:mod:`scidl.workloads.nbody.wh`) splits ``H = H_Kepler + H_int``
in Jacobi coordinates; the Kepler part is solved exactly, the interaction part gives a
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

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset

from scidl.workloads.base import BuildContext, Task, Workload, WorkloadConfig
from scidl.workloads.nbody.nets import DirectKick, HamiltonianKick
from scidl.workloads.nbody.wh import WHState, integrate, interaction_kick


class NBodyConfig(WorkloadConfig):
    """Settings of the neural N-body workload (the ``task`` section)."""

    model: Literal["hamiltonian", "direct"] = Field("hamiltonian", description="kick network")
    hidden: int = Field(64, ge=1, description="hidden width of the pair network")
    depth: int = Field(2, ge=1, description="hidden layers of the pair network (tanh)")
    n_systems: int = Field(96, ge=2, description="training systems (star + planets)")
    n_planets: int = Field(2, ge=1, description="planets per training system")
    n_steps: int = Field(400, ge=1, description="classical WH steps per training system")
    sample_every: int = Field(4, ge=1, description="keep every k-th state as a sample")
    steps_per_orbit: float = Field(40.0, gt=2, description="WH step = inner period / this")
    mass_range: tuple[float, float] = Field((1e-4, 2e-3), description="planet masses (log-uniform)")
    n_val_systems: int = Field(16, ge=1, description="held-out systems")


def orbital_state(
    m0: float, m: float, a: float, e: float, inc: float, node: float, peri: float, f: float
) -> tuple[np.ndarray, np.ndarray]:
    """Heliocentric position and velocity of a planet from orbital elements (G = 1)."""
    mu = m0 + m
    p = a * (1.0 - e * e)
    r = p / (1.0 + e * math.cos(f))
    pos = np.array([r * math.cos(f), r * math.sin(f), 0.0])
    vel = math.sqrt(mu / p) * np.array([-math.sin(f), e + math.cos(f), 0.0])
    cO, sO, ci, si, cw, sw = (
        math.cos(node),
        math.sin(node),
        math.cos(inc),
        math.sin(inc),
        math.cos(peri),
        math.sin(peri),
    )
    rot = np.array(
        [
            [cO * cw - sO * sw * ci, -cO * sw - sO * cw * ci, sO * si],
            [sO * cw + cO * sw * ci, -sO * sw + cO * cw * ci, -cO * si],
            [sw * si, cw * si, ci],
        ]
    )
    return rot @ pos, rot @ vel


def random_systems(
    n: int,
    n_planets: int,
    rng: np.random.Generator,
    mass_range: tuple[float, float] = (1e-4, 2e-3),
    a_first: tuple[float, float] = (0.8, 1.2),
    ratio: tuple[float, float] = (1.5, 2.0),
    e_max: float = 0.08,
    inc_max: float = 0.03,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` star + planet systems in the centre-of-mass frame: x, v (n, 1+P, 3), m (n, 1+P)."""
    lo, hi = np.log(mass_range[0]), np.log(mass_range[1])
    m = np.ones((n, 1 + n_planets))
    x = np.zeros((n, 1 + n_planets, 3))
    v = np.zeros_like(x)
    for s in range(n):
        a = rng.uniform(*a_first)
        for i in range(1, 1 + n_planets):
            m[s, i] = math.exp(rng.uniform(lo, hi))
            el = (rng.uniform(0, e_max), rng.uniform(0, inc_max), *rng.uniform(0, 2 * math.pi, 3))
            x[s, i], v[s, i] = orbital_state(1.0, m[s, i], a, *el)
            a *= rng.uniform(*ratio)
    com_x = (m[..., None] * x).sum(1, keepdims=True) / m.sum(1)[:, None, None]
    com_v = (m[..., None] * v).sum(1, keepdims=True) / m.sum(1)[:, None, None]
    return x - com_x, v - com_v, m


def inner_period(m: np.ndarray) -> float:
    """Orbital period of a planet at a = 1 around a unit star (2 pi)."""
    return 2.0 * math.pi


def generate_samples(n: int, cfg: NBodyConfig, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Jacobi positions, masses and exact interaction kicks along classical WH trajectories."""
    x, v, m = random_systems(n, cfg.n_planets, rng, cfg.mass_range)
    state = WHState.from_inertial(x, v, m)
    h = inner_period(m) / cfg.steps_per_orbit
    qs: list[np.ndarray] = []
    integrate(
        state, h, cfg.n_steps, record_every=cfg.sample_every, on_record=lambda _, s: qs.append(s.q)
    )
    q = np.concatenate(qs)
    mm = np.concatenate([m] * len(qs))
    acc = interaction_kick(q, WHState(q, q, state.ms.__class__(mm)).ms)
    return {
        "q": torch.from_numpy(q).float(),
        "m": torch.from_numpy(mm).float(),
        "a": torch.from_numpy(acc).float(),
    }


class KickDataset(Dataset):
    """Map-style dataset of ``{"q", "m", "a"}`` samples (one system state each)."""

    def __init__(self, data: dict[str, torch.Tensor]) -> None:
        self.data = data

    def __len__(self) -> int:
        return self.data["q"].shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.data.items()}


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
    return cls(cfg.hidden, cfg.depth)


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
        )
