"""``inverse``: learned post-processing of a Tikhonov deblurring (FBPConvNet-style).

Data: piecewise-constant phantoms ``u``, observations ``y = G u + e`` with a known periodic
Gaussian blur ``G`` and white noise (:mod:`scidl.workloads.inverse.ops`). The network is
``Psi(y) = T(y) + U(T(y))``: the closed-form Tikhonov inverse ``T`` followed by a residual
U-net ``U`` (``input="data"``: ``Psi(y) = y + U(y)``, the inverse learned from ``y`` alone,
the setting of Nguyen & Bui-Thanh's model-constrained networks). The loss combines three terms:

    L = ||u - Psi(y)||^2                                  (supervised)
      + lambda ||y - G Psi(y)||^2                         (model-constrained, Nguyen & Bui-Thanh)
      + mu ||Psi(y + v) - Psi(y)||^2 / s^2, v ~ N(0, s^2 I)  (Jacobian, Amjad et al.)

(all as per-pixel means). The last term is an unbiased finite-difference estimate of
``||J_Psi(y)||_F^2 / n_pixels`` for a piecewise-linear network, with the perturbation at the
noise level ``s``. Reported: mean PSNR of ``Psi`` and of the tuned Tikhonov baseline on a
held-out set.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torch.utils.data import TensorDataset

from scidl.workloads.base import BuildContext, Task, Workload, WorkloadConfig
from scidl.workloads.common.unet import UNet
from scidl.workloads.inverse.nets import PostProcessed
from scidl.workloads.inverse.ops import BlurOperator, Tikhonov, make_phantoms, psnr, tune_alpha


class InverseConfig(WorkloadConfig):
    """Settings of the ``inverse`` workload."""

    size: int = Field(32, ge=8, description="image side in pixels (divisible by 2^depth)")
    n_train: int = Field(1024, ge=1, description="training pairs (y, u)")
    n_val: int = Field(256, ge=1, description="held-out pairs")
    blur_sigma: float = Field(1.5, gt=0, description="Gaussian blur width of G in pixels")
    noise: float = Field(0.02, gt=0, description="noise standard deviation s")
    alpha: float | None = Field(
        None, gt=0, description="Tikhonov weight; None: best PSNR on the training set"
    )
    base: int = Field(8, ge=1, description="U-net channels at full resolution")
    depth: int = Field(2, ge=1, description="U-net down-sampling steps")
    mc_weight: float = Field(0.0, ge=0, description="lambda of the model-constrained term")
    jacobian_weight: float = Field(0.0, ge=0, description="mu of the Jacobian penalty")
    input: Literal["tikhonov", "data"] = Field(
        "tikhonov", description="what the U-net corrects: the Tikhonov reconstruction "
        "(post-processing) or the observation y itself (a learned inverse, no Tikhonov step)"
    )


def make_inverse_data(cfg: InverseConfig, seed: int) -> dict[str, torch.Tensor]:
    """Phantoms and noisy blurred observations for training and validation."""
    op = BlurOperator(cfg.size, cfg.blur_sigma)
    g = torch.Generator().manual_seed(7919 * seed + 17)
    out = {}
    for split, n, s in (("train", cfg.n_train, 2 * seed + 1), ("val", cfg.n_val, 2 * seed + 2)):
        u = make_phantoms(n, cfg.size, seed=1000 + s)
        with torch.no_grad():
            out[f"y_{split}"] = op(u) + cfg.noise * torch.randn(u.shape, generator=g)
        out[f"u_{split}"] = u
    return out


def inverse_loss(model: nn.Module, y: torch.Tensor, u: torch.Tensor, op: BlurOperator,
                 mc_weight: float, jacobian_weight: float, noise: float) -> torch.Tensor:
    """The combined loss of the module docstring for one batch."""
    if jacobian_weight > 0:
        # one forward over [y; y + v] keeps a single autograd graph (one DDP forward)
        v = noise * torch.randn_like(y)
        both = model(torch.cat([y, y + v]))
        x, x_pert = both[: y.shape[0]], both[y.shape[0] :]
    else:
        x = model(y)
    loss = torch.mean((x - u) ** 2)
    if mc_weight > 0:
        loss = loss + mc_weight * torch.mean((y - op(x)) ** 2)
    if jacobian_weight > 0:
        loss = loss + jacobian_weight * torch.mean((x_pert - x) ** 2) / noise**2
    return loss


class Inverse(Workload):
    """Deblurring: U-net on Tikhonov output, Jacobian and model-constrained regularisation."""

    name = "inverse"
    description = "deblurring: U-net on Tikhonov output vs Tikhonov (PSNR), model-constrained loss"
    Config = InverseConfig
    defaults: ClassVar[dict[str, Any]] = {
        "train": {"epochs": 10, "batch_size": 32},
        "optim": {"name": "adam", "lr": 3e-3, "schedule": "cosine", "min_lr_factor": 0.02},
    }
    smoke: ClassVar[list[str]] = [
        "task.size=16", "task.n_train=16", "task.n_val=8", "task.base=4", "task.depth=1",
        "task.mc_weight=0.1", "task.jacobian_weight=1e-3", "train.batch_size=4",
    ]

    def build(self, cfg: WorkloadConfig, ctx: BuildContext) -> Task:
        assert isinstance(cfg, InverseConfig)
        data = make_inverse_data(cfg, ctx.seed)
        op = BlurOperator(cfg.size, cfg.blur_sigma)
        alpha = cfg.alpha or tune_alpha(op, data["y_train"], data["u_train"])
        tik = Tikhonov(op, alpha)
        pre: nn.Module = tik if cfg.input == "tikhonov" else nn.Identity()
        model = PostProcessed(pre, UNet(1, 1, base=cfg.base, depth=cfg.depth))
        with torch.no_grad():
            tik_val = psnr(tik(data["y_val"]), data["u_val"]).mean().item()

        def loss(m: nn.Module, batch: Any) -> torch.Tensor:
            y, u = batch
            return inverse_loss(m, y, u, op, cfg.mc_weight, cfg.jacobian_weight, cfg.noise)

        def evaluate(m: nn.Module, val: Any) -> dict[str, float]:
            y, u = val
            with torch.no_grad():
                x = torch.cat([m(yb) for yb in torch.split(y, 64)])
                residual = torch.mean((y - op(x)) ** 2).sqrt().item()
            p = psnr(x, u).mean().item()
            return {"psnr": p, "tikhonov_psnr": tik_val, "gain_db": p - tik_val,
                    "mse": torch.mean((x - u) ** 2).item(), "data_residual_rms": residual}

        return Task(
            model=model, train_data=TensorDataset(data["y_train"], data["u_train"]),
            loss=loss, evaluate=evaluate, val_data=(data["y_val"], data["u_val"]),
            headline="psnr", higher_is_better=True,
            extras={"operator": op, "alpha": alpha, "tikhonov_psnr": tik_val},
        )
