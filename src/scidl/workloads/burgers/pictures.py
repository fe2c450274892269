"""The Burgers workload's picture of a trained model: prediction, Cole–Hopf reference and
the absolute error on the evaluation grid, as three panels over (t, x)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from scidl.runtime.plotting import caption_text, finish, new_figure, provenance
from scidl.workloads.base import Task
from scidl.workloads.burgers.reference import reference_grid
from scidl.workloads.burgers.workload import BurgersConfig, evaluate

__all__ = ["solution_picture"]


def predict_grid(model: nn.Module, data: Mapping[str, torch.Tensor], shape: tuple[int, int]) -> np.ndarray:
    """The model's u on the evaluation grid ``data["xt"]`` as an array of ``shape`` (nt, nx)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        pred = model(data["xt"].to(device)).double().cpu().numpy()
    return pred.reshape(shape)


def solution_picture(cfg: BurgersConfig, model: nn.Module, task: Task, path: Path) -> Path:
    """``u_PINN(x, t)``, the Cole–Hopf ``u(x, t)`` and ``|u_PINN - u|`` with colour bars;
    the title names the relative L2 error (the workload's own metric)."""
    x, t, u = reference_grid(cfg.ref_nx, cfg.ref_nt, 1.0, cfg.nu, cfg.ref_nodes)
    pred = predict_grid(model, task.val_data, u.shape)
    metrics = evaluate(model, task.val_data)
    err = np.abs(pred - u)
    fig = new_figure((13.0, 3.9))
    axes = fig.subplots(1, 3)
    extent = (float(t[0]), float(t[-1]), float(x[0]), float(x[-1]))
    vmax = float(max(np.abs(u).max(), np.abs(pred).max()))
    panels = [(pred, "prediction $u_\\theta(x, t)$", "RdBu_r", -vmax, vmax, "u"),
              (u, "reference $u(x, t)$ (Cole–Hopf)", "RdBu_r", -vmax, vmax, "u"),
              (err, "absolute error $|u_\\theta - u|$", "magma", 0.0, float(err.max()), "|error|")]
    for ax, (field, title, cmap, lo, hi, unit) in zip(axes, panels, strict=True):
        im = ax.imshow(field.T, origin="lower", aspect="auto", extent=extent, cmap=cmap,
                       vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("t (dimensionless)")
        ax.set_ylabel("x (dimensionless)")
        fig.colorbar(im, ax=ax, label=unit)
    fig.suptitle(f"Burgers PINN: rel L2 = {metrics['rel_l2']:.3g}, max |error| = "
                 f"{metrics['max_abs_err']:.3g}, ν = {cfg.nu:.3g}")
    return finish(fig, path, caption_text(provenance(), "trained"))
