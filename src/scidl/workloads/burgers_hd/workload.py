"""PINN for a high-dimensional Burgers-type equation (E, Han & Jentzen 2017).

    u_t + (d^2 / 2) Δu + d (u - (2 + d) / (2 d)) Σ_i ∂_i u = 0,   t in [0, T], x in [-1, 1]^d,
    exact solution u(t, x) = logistic(t + mean(x)),

solved backwards from the terminal data ``u(T, x)`` with the exact solution as Dirichlet
data on the faces of the cube. The Laplacian is computed by the forward-Laplacian MLP
(:mod:`scidl.workloads.burgers_hd.nets`): exactly (``laplacian="exact"``, one batched pass
over all d directions), by a random subset of coordinates (``"sdgd"``, unbiased, cost
independent of d) or by Hutchinson probes (``"hutchinson"``). The residual is divided by
``d`` so its scale does not grow with the dimension. Headline: relative L2 error on
held-out uniform points; ``rel_l2_diag`` probes points spread along the diagonal, where
``mean(x)`` covers [-1, 1] (uniform points in high d have ``mean(x)`` ≈ 0).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from scidl.workloads.base import BuildContext, Task, Workload, WorkloadConfig
from scidl.workloads.burgers.workload import CollocationSet
from scidl.workloads.burgers_hd.nets import ForwardLaplacianMLP


class BurgersHDConfig(WorkloadConfig):
    """Settings of the high-dimensional Burgers PINN (the ``task`` section)."""

    d: int = Field(2, ge=1, description="spatial dimension")
    t_max: float = Field(1.0, gt=0, description="terminal time T")
    n_collocation: int = Field(2000, ge=2, description="interior residual points (sharded)")
    n_terminal: int = Field(256, ge=0, description="points on t = T (every rank)")
    n_boundary: int = Field(256, ge=0, description="points on the cube faces (every rank)")
    diag_fraction: float = Field(
        0.25, ge=0, le=1, description="fraction of points drawn near the diagonal x = c 1"
    )
    hidden: int = Field(64, ge=1, description="hidden width")
    depth: int = Field(3, ge=1, description="hidden layers (tanh)")
    laplacian: Literal["auto", "exact", "sdgd", "hutchinson"] = Field(
        "auto", description="Laplacian: auto = exact for d <= probes, else sdgd"
    )
    probes: int = Field(16, ge=1, description="sdgd: coordinates sampled; hutchinson: probes")
    cond_weight: float = Field(10.0, ge=0, description="weight of terminal + boundary misfit")
    n_eval: int = Field(4096, ge=1, description="held-out evaluation points per set")


def exact_solution(tx: torch.Tensor) -> torch.Tensor:
    """u = logistic(t + mean(x)) for rows ``[t, x_1..x_d]``."""
    return torch.sigmoid(tx[:, 0] + tx[:, 1:].mean(dim=1))


def sample_points(
    n: int, d: int, t_max: float, diag_fraction: float, gen: torch.Generator
) -> torch.Tensor:
    """Rows ``[t, x]``: uniform in [0, T] x [-1, 1]^d, a fraction near the diagonal."""
    t = torch.rand(n, 1, generator=gen) * t_max
    x = 2.0 * torch.rand(n, d, generator=gen) - 1.0
    n_diag = int(round(diag_fraction * n))
    if n_diag and d > 1:
        c = 2.0 * torch.rand(n_diag, 1, generator=gen) - 1.0
        noise = 0.2 * (2.0 * torch.rand(n_diag, d, generator=gen) - 1.0)
        x[:n_diag] = (c + noise).clamp(-1.0, 1.0)
    return torch.cat([t, x], dim=1)


def condition_points(cfg: BurgersHDConfig, gen: torch.Generator) -> torch.Tensor:
    """Terminal points (t = T) and boundary points (one random coordinate set to +-1)."""
    term = sample_points(cfg.n_terminal, cfg.d, cfg.t_max, cfg.diag_fraction, gen)
    term[:, 0] = cfg.t_max
    bnd = sample_points(cfg.n_boundary, cfg.d, cfg.t_max, cfg.diag_fraction, gen)
    if cfg.n_boundary:
        face = torch.randint(cfg.d, (cfg.n_boundary,), generator=gen)
        side = torch.where(torch.rand(cfg.n_boundary, generator=gen) < 0.5, -1.0, 1.0)
        bnd[torch.arange(cfg.n_boundary), 1 + face] = side
    return torch.cat([term, bnd])


def directions(
    cfg: BurgersHDConfig, gen: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input-space directions and second-order weights for :class:`ForwardLaplacianMLP`.

    Columns 0 and 1 are ``e_t`` and ``(0, 1, .., 1)`` (giving u_t and Σ ∂_i u); the rest
    carry the Laplacian: all unit vectors (exact), ``probes`` random unit vectors weighted
    ``d / probes`` (sdgd), or ``probes`` Rademacher vectors weighted ``1 / probes``.
    """
    d = cfg.d
    kind = cfg.laplacian
    if kind == "auto":
        kind = "exact" if d <= cfg.probes else "sdgd"
    if kind == "exact" or (kind == "sdgd" and cfg.probes >= d):
        second, weight = torch.eye(d), 1.0
    elif kind == "sdgd":
        idx = torch.randperm(d, generator=gen)[: cfg.probes]
        second, weight = torch.eye(d)[:, idx], d / cfg.probes
    else:
        second = torch.randint(0, 2, (d, cfg.probes), generator=gen).float() * 2.0 - 1.0
        weight = 1.0 / cfg.probes
    p = 2 + second.shape[1]
    dirs = torch.zeros(1 + d, p)
    dirs[0, 0] = 1.0
    dirs[1:, 1] = 1.0
    dirs[1:, 2:] = second
    w = torch.full((p,), weight)
    w[:2] = 0.0
    return dirs, w


def residual(
    model: nn.Module, tx: torch.Tensor, cfg: BurgersHDConfig, gen: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(u, r / d)`` with r = u_t + (d^2/2) Δu + d (u - (2+d)/(2d)) Σ ∂_i u."""
    d = cfg.d
    dirs, w = directions(cfg, gen)
    u, j, lap = model(tx, dirs.to(tx), w.to(tx))
    r = j[:, 0] + 0.5 * d * d * lap + d * (u - (2.0 + d) / (2.0 * d)) * j[:, 1]
    return u, r / d


def laplacian_is_exact(cfg: BurgersHDConfig) -> bool:
    """Whether the Laplacian is computed exactly (then the loss is one fixed function)."""
    kind = cfg.laplacian
    if kind == "auto":
        kind = "exact" if cfg.d <= cfg.probes else "sdgd"
    return kind == "exact" or (kind == "sdgd" and cfg.probes >= cfg.d)


def check_fixed_objective(cfg: BurgersHDConfig) -> None:
    """Called when an L-BFGS phase starts: its line search needs one fixed objective, but
    sdgd and Hutchinson draw new directions at every loss call."""
    from scidl.config import ConfigError

    if not laplacian_is_exact(cfg):
        raise ConfigError(
            f"an L-BFGS phase needs a fixed loss, but task.laplacian={cfg.laplacian} draws "
            f"random directions at d={cfg.d} (task.probes={cfg.probes}): use "
            "task.laplacian=exact or train Adam only")


def make_loss(cfg: BurgersHDConfig, cond: torch.Tensor, seed: int):
    """``loss(model, batch)`` = mean (r/d)^2 on the shard + cond_weight * misfit on conditions."""
    gen = torch.Generator().manual_seed(seed + 4242)  # random Laplacian directions
    cond_u = exact_solution(cond)

    def loss(model: nn.Module, batch: Any) -> torch.Tensor:
        pts = batch[0] if isinstance(batch, (list, tuple)) else batch
        device = next(model.parameters()).device
        n = pts.shape[0]
        u, r = residual(model, torch.cat([pts.to(device), cond.to(device)]), cfg, gen)
        total = r[:n].pow(2).mean()
        if cond.shape[0]:
            total = total + cfg.cond_weight * (u[n:] - cond_u.to(device)).pow(2).mean()
        return total

    return loss


def evaluate(model: nn.Module, data: dict[str, torch.Tensor]) -> dict[str, float]:
    """Relative L2 errors on uniform points and on points spread along the diagonal."""
    device = next(model.parameters()).device
    out = {}
    for key, name in (("uniform", "rel_l2"), ("diag", "rel_l2_diag")):
        tx = data[key]
        with torch.no_grad():
            pred = model(tx.to(device)).double().cpu()
        ref = exact_solution(tx.double())
        out[name] = float((pred - ref).norm() / ref.norm())
    return out


class BurgersHD(Workload):
    """High-dimensional Burgers-type PINN with an efficient (forward) Laplacian."""

    name = "burgers_hd"
    description = (
        "PINN for the d-dimensional Burgers-type equation (E-Han-Jentzen), exact logistic solution"
    )
    Config = BurgersHDConfig
    defaults = {
        "train": {"epochs": 2000, "eval_every": 250, "log_every": 50, "batch_size": 1000},
        "optim": {"name": "adam", "lr": 2e-3, "schedule": "cosine", "min_lr_factor": 0.02},
        "checkpoint": {"every_steps": 1000},
        "dist": {"nproc": 2},
    }

    def build(self, cfg: WorkloadConfig, ctx: BuildContext) -> Task:
        assert isinstance(cfg, BurgersHDConfig)
        gen = torch.Generator().manual_seed(ctx.seed)
        colloc = sample_points(cfg.n_collocation, cfg.d, cfg.t_max, cfg.diag_fraction, gen)
        cond = condition_points(cfg, gen)
        eval_gen = torch.Generator().manual_seed(ctx.seed + 99991)
        val = {
            "uniform": sample_points(cfg.n_eval, cfg.d, cfg.t_max, 0.0, eval_gen),
            "diag": sample_points(cfg.n_eval, cfg.d, cfg.t_max, 1.0, eval_gen),
        }
        model = ForwardLaplacianMLP(cfg.d, cfg.hidden, cfg.depth, cfg.t_max)
        return Task(
            model=model,
            train_data=CollocationSet(colloc),
            loss=make_loss(cfg, cond, ctx.seed),
            evaluate=evaluate,
            val_data=val,
            headline="rel_l2",
            higher_is_better=False,
            full_batch=True,
            extras={"d": cfg.d, "freeze_objective": lambda: check_fixed_objective(cfg)},
        )
