"""``digits``: scikit-learn's 8×8 handwritten digits (1,797 images, shipped in the package)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.utils.data import TensorDataset

from scidl.workloads.base import BuildContext, Task, Width, Workload, WorkloadConfig
from scidl.workloads.common.nets import mlp
from scidl.workloads.digits.data import load_digits_arrays
from scidl.workloads.digits.nets import digits_cnn


class DigitsConfig(WorkloadConfig):
    """Settings of the ``digits`` workload."""

    model: Literal["mlp", "cnn", "resnet"] = Field("mlp", description="network family")
    depth: int = Field(20, ge=8, description="ResNet depth, 6n+2 (resnet model only)")
    width: int = Field(16, ge=4, description="ResNet base width (resnet model only)")
    hidden: list[Width] = Field([128, 64], description="MLP hidden widths / CNN head widths")
    channels: list[Width] = Field([16, 32], description="CNN conv channels (one 3x3 conv each)")
    activation: Literal["relu", "tanh", "gelu", "silu", "elu", "sigmoid"] = "relu"
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout in the head")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="held-out fraction (stratified)")


def _ce_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def _evaluate(model: nn.Module, data: TensorDataset) -> dict[str, float]:
    x, y = data.tensors
    dev = next(model.parameters()).device
    logits = model(x.to(dev)).cpu()
    return {
        "accuracy": (logits.argmax(1) == y).float().mean().item(),
        "loss": nn.functional.cross_entropy(logits, y).item(),
    }


class Digits(Workload):
    name = "digits"
    description = "scikit-learn 8x8 digits classification, MLP or small CNN, accuracy"
    Config = DigitsConfig
    smoke = ["train.batch_size=16"]
    defaults = {"train": {"epochs": 20, "batch_size": 64}, "optim": {"name": "adam", "lr": 1e-3}}

    def build(self, cfg: DigitsConfig, ctx: BuildContext) -> Task:  # type: ignore[override]
        Xtr, ytr, Xte, yte = load_digits_arrays(cfg.test_fraction, seed=0)
        if cfg.model == "mlp":
            model: nn.Module = nn.Sequential(nn.Flatten(), mlp(64, cfg.hidden, 10, cfg.activation, cfg.dropout))
        elif cfg.model == "cnn":
            model = digits_cnn(cfg.channels, cfg.hidden, cfg.activation, cfg.dropout)
        else:  # a block sequence, so pipeline stages can cut it (parallel.pipeline_stages)
            from scidl.parallel.blocks import resnet_sequential

            model = resnet_sequential(cfg.depth, cfg.width, in_ch=1, classes=10)
        return Task(
            model=model,
            train_data=TensorDataset(torch.from_numpy(Xtr), torch.from_numpy(ytr)),
            val_data=TensorDataset(torch.from_numpy(Xte), torch.from_numpy(yte)),
            loss=_ce_loss,
            evaluate=_evaluate,
            headline="accuracy",
            higher_is_better=True,
            criterion=nn.functional.cross_entropy,
        )
