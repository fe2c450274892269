"""``admissions``: MLP regression on a generated graduate-admissions-like table.

The generator mimics the public Graduate Admissions data (Acharya et al. 2019) used by
the Anderson-acceleration paper: 7 correlated applicant features (GRE, TOEFL, university
rating, SOP, LOR, CGPA, research), a "chance of admit" target with mean 0.72 and standard
deviation 0.14, clipped to [0.34, 0.97], of which about 80 % of the variance is explained
by the features (so R² ≈ 0.8 is reachable and validation MSE ≈ 0.004 is the noise floor).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.utils.data import TensorDataset

from scidl.workloads.admissions.data import FEATURES, make_admissions
from scidl.workloads.base import BuildContext, Task, Width, Workload, WorkloadConfig
from scidl.workloads.common.nets import mlp


class AdmissionsConfig(WorkloadConfig):
    """Settings of the ``admissions`` workload."""

    n_rows: int = Field(400, ge=20, description="rows in the generated table")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="held-out fraction")
    explained: float = Field(0.82, gt=0, le=1, description="variance explained by features")
    hidden: list[Width] = Field([64, 64], description="hidden layer widths")
    activation: Literal["relu", "tanh", "gelu", "silu", "elu", "sigmoid"] = "relu"
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout between hidden layers")
    data_seed: int | None = Field(None, description="seed of the table (default: train.seed)")


def regression_metrics(pred: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    mse = torch.mean((pred - y) ** 2).item()
    var = torch.var(y, unbiased=False).item()
    return {"mse": mse, "r2": 1.0 - mse / var if var > 0 else float("nan")}


def _mse_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(model(x).squeeze(-1), y)


def _evaluate(model: nn.Module, data: TensorDataset) -> dict[str, float]:
    x, y = data.tensors
    dev = next(model.parameters()).device
    return regression_metrics(model(x.to(dev)).squeeze(-1).cpu(), y)


class Admissions(Workload):
    name = "admissions"
    description = "MLP regression of a graduate-admissions-like table (400 rows, 7 features), MSE/R²"
    Config = AdmissionsConfig
    smoke = ["task.n_rows=64", "train.batch_size=8"]
    defaults = {"train": {"epochs": 100, "batch_size": 40}, "optim": {"name": "adam", "lr": 1e-3}}

    def build(self, cfg: AdmissionsConfig, ctx: BuildContext) -> Task:  # type: ignore[override]
        X, y = make_admissions(cfg.n_rows, cfg.explained, cfg.data_seed if cfg.data_seed is not None else ctx.seed)
        rng = np.random.default_rng(12345)  # fixed split of the fixed table
        idx = rng.permutation(cfg.n_rows)
        n_val = int(round(cfg.n_rows * cfg.val_fraction))
        val, tr = idx[:n_val], idx[n_val:]
        t = lambda a: torch.from_numpy(a)  # noqa: E731
        return Task(
            model=mlp(len(FEATURES), cfg.hidden, 1, cfg.activation, cfg.dropout),
            train_data=TensorDataset(t(X[tr]), t(y[tr])),
            val_data=TensorDataset(t(X[val]), t(y[val])),
            loss=_mse_loss,
            evaluate=_evaluate,
            headline="mse",
            higher_is_better=False,
            criterion=lambda out, y: nn.functional.mse_loss(out.squeeze(-1), y),
        )
