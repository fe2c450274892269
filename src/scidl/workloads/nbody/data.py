"""Training data of the kick networks: random planetary systems, their exact kicks."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from scidl.workloads.nbody.wh import Masses, WHState, integrate, interaction_kick

if TYPE_CHECKING:  # the config lives with the workload, which imports this module
    from scidl.workloads.nbody.workload import NBodyConfig


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
    """Jacobi positions, masses and exact interaction kicks (of ``cfg.scheme``'s split)
    along classical WH trajectories; all ``n`` systems are integrated as one batch."""
    x, v, m = random_systems(n, cfg.n_planets, rng, cfg.mass_range)
    state = WHState.from_inertial(x, v, m, cfg.scheme)
    h = inner_period(m) / cfg.steps_per_orbit
    qs: list[np.ndarray] = []
    integrate(
        state, h, cfg.n_steps, record_every=cfg.sample_every, on_record=lambda _, s: qs.append(s.q)
    )
    q = np.concatenate(qs)
    mm = np.concatenate([m] * len(qs))
    acc = interaction_kick(q, Masses(mm, cfg.scheme))
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
