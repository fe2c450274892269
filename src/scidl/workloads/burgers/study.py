"""Budget-vs-error study for the Burgers PINN (single process, full batch).

Runs the workload's own loss with Adam (cosine schedule) and then an optional L-BFGS
phase (strong-Wolfe line search), evaluating the relative L2 error against the Cole–Hopf
reference along the way; writes a JSON record and PNG plots. This is the reference
procedure behind ``docs/workloads/burgers.md``; the trainer runs the same loss sharded
over ranks.

    scidl study burgers --adam 3000 --lbfgs 50 --tag hard_rar \
        --set hard_constraints=true --set rar_every=100
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from scidl.config import parse_value
from scidl.optim.config import OptimConfig
from scidl.runtime.files import atomic_write_text
from scidl.workloads.base import BuildContext
from scidl.workloads.burgers.workload import Burgers, BurgersConfig, CollocationSet


def run_study(
    cfg: BurgersConfig,
    adam_steps: int,
    lr: float,
    lbfgs_steps: int,
    seed: int = 0,
    eval_every: int = 250,
    shard: int = 1,
    lbfgs: OptimConfig | None = None,
) -> tuple[list[dict[str, Any]], torch.nn.Module, Any]:
    """Train and return ``(history, model, task)``; history rows hold phase, step, loss,
    cumulative loss evaluations, wall seconds and the evaluation metrics.

    ``shard`` > 1 trains on ``1/shard`` of the collocation points (what one rank sees).
    L-BFGS settings come from ``lbfgs`` (an ``OptimConfig``: ``lbfgs_max_iter``,
    ``lbfgs_history``, ``lbfgs_tolerance_*``; step length 1 with the strong-Wolfe search),
    the same fields ``train.phases`` uses."""
    lb_cfg = lbfgs if lbfgs is not None else OptimConfig(name="lbfgs")
    torch.manual_seed(seed)
    task = Burgers().build(cfg, BuildContext(seed=seed))
    model = task.model
    data = task.train_data
    assert isinstance(data, CollocationSet)
    pts = data.points[: cfg.n_collocation // shard]
    hist: list[dict[str, Any]] = []
    evals = 0
    t0 = time.perf_counter()

    def record(phase: str, step: int, loss: float) -> None:
        wall = time.perf_counter() - t0
        hist.append(
            {
                "phase": phase,
                "step": step,
                "loss": loss,
                "loss_evals": evals,
                "wall_s": wall,
                **task.evaluate(model, task.val_data),
            }
        )

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    floor = 0.03
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            floor
            + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(s, adam_steps) / max(adam_steps, 1)))
        ),
    )
    for step in range(1, adam_steps + 1):
        opt.zero_grad()
        loss = task.loss(model, pts)
        loss.backward()
        opt.step()
        sched.step()
        evals += 1
        if step % eval_every == 0 or step == adam_steps:
            record("adam", step, loss.item())
    if lbfgs_steps:
        lb = torch.optim.LBFGS(
            model.parameters(),
            lr=1.0,
            max_iter=lb_cfg.lbfgs_max_iter,
            history_size=lb_cfg.lbfgs_history,
            tolerance_grad=lb_cfg.lbfgs_tolerance_grad,
            tolerance_change=lb_cfg.lbfgs_tolerance_change,
            line_search_fn="strong_wolfe",
        )
        rar = task.extras.get("rar")
        if rar is not None:  # freeze the point set: L-BFGS needs one fixed objective
            rar.cfg = rar.cfg.model_copy(update={"rar_every": 0})

        def closure() -> torch.Tensor:
            nonlocal evals
            lb.zero_grad()
            out = task.loss(model, pts)
            out.backward()
            evals += 1
            return out

        every = max(1, lbfgs_steps // 10)
        for step in range(1, lbfgs_steps + 1):
            loss = lb.step(closure)
            if step % every == 0 or step == lbfgs_steps:
                record("lbfgs", step, loss.item())
    return hist, model, task


def plot_solution(model: torch.nn.Module, cfg: BurgersConfig, path: Path) -> None:
    """Prediction vs Cole–Hopf at three times, and the error map."""
    import numpy as np
    from matplotlib.figure import Figure

    from scidl.runtime.files import save_figure
    from scidl.workloads.burgers.reference import reference_grid

    x, t, u = reference_grid(cfg.ref_nx, cfg.ref_nt, 1.0, cfg.nu, cfg.ref_nodes)
    tt, xx = np.meshgrid(t, x, indexing="ij")
    xt = torch.from_numpy(np.stack([xx.ravel(), tt.ravel()], 1)).float()
    with torch.no_grad():
        pred = model(xt).numpy().reshape(u.shape)
    fig = Figure(figsize=(16, 3.4))
    axes = fig.subplots(1, 4)
    for ax, tv in zip(axes[:3], (0.25, 0.5, 0.75), strict=True):
        i = int(np.argmin(np.abs(t - tv)))
        ax.plot(x, u[i], "k-", lw=2, label="Cole–Hopf")
        ax.plot(x, pred[i], "r--", lw=1.5, label="PINN")
        ax.set_title(f"t = {t[i]:.2f}")
        ax.set_xlabel("x")
    axes[0].legend()
    im = axes[3].imshow(
        np.abs(pred - u).T, origin="lower", aspect="auto", extent=[0, 1, -1, 1], cmap="magma"
    )
    axes[3].set_title("|u_PINN - u_ref|")
    axes[3].set_xlabel("t")
    axes[3].set_ylabel("x")
    fig.colorbar(im, ax=axes[3])
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of ``scidl study burgers``."""
    ap.add_argument("--adam", type=int, default=3000, help="Adam steps")
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam peak learning rate")
    ap.add_argument("--lbfgs", type=int, default=0, help="L-BFGS steps (each up to max_iter)")
    ap.add_argument("--lbfgs-max-iter", type=int, default=OptimConfig().lbfgs_max_iter,
                    help="L-BFGS iterations per step (optim.lbfgs_max_iter)")
    ap.add_argument("--lbfgs-history", type=int, default=OptimConfig().lbfgs_history,
                    help="L-BFGS history size (optim.lbfgs_history)")
    ap.add_argument("--set", action="append", default=[], help="task field=value")
    ap.add_argument("--shard", type=int, default=1, help="train on 1/shard of the points")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="run", help="name of this run in the output JSON")
    ap.add_argument("--out", default="benchmarks/results/workloads_burgers.json")
    ap.add_argument("--plot", default="", help="PNG path for the solution plot")


def run(args: argparse.Namespace) -> int:
    """Run the study, print one JSON row per evaluation, merge the record into ``--out``."""
    from scidl.cli import UserError

    torch.set_num_threads(1)
    if bad := [s for s in args.set if "=" not in s]:
        raise UserError(f"--set {bad[0]!r}: expected field=value")
    fields = {k: parse_value(v) for k, _, v in (s.partition("=") for s in args.set)}
    cfg = BurgersConfig(**fields)
    lb = OptimConfig(name="lbfgs", lbfgs_max_iter=args.lbfgs_max_iter,
                     lbfgs_history=args.lbfgs_history)
    hist, model, _ = run_study(cfg, args.adam, args.lr, args.lbfgs, args.seed, shard=args.shard,
                               lbfgs=lb)
    for row in hist:
        print(json.dumps(row))
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {}
    data[args.tag] = {
        "task": cfg.model_dump(),
        "adam": args.adam,
        "lr": args.lr,
        "lbfgs": args.lbfgs,
        "lbfgs_max_iter": args.lbfgs_max_iter,
        "lbfgs_history": args.lbfgs_history,
        "shard": args.shard,
        "seed": args.seed,
        "torch_threads": 1,
        "history": hist,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(data, indent=1))
    if args.plot:
        plot_solution(model, cfg, Path(args.plot))
    return 0

