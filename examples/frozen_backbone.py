"""Fine-tune a head on a frozen backbone: parameters with ``requires_grad=False``.

    scidl train examples/frozen_backbone.py:make_task --nproc 2 --epochs 5

The backbone stands in for a pretrained feature extractor (here: seeded random weights;
load yours with ``backbone.load_state_dict(torch.load(...))``). Its parameters are frozen,
so DDP neither reduces nor waits for their gradients, the optimizer leaves them as they
are, and ``scidl predict`` counts only the head's gradients. ``task.freeze=false`` trains
everything.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn
from torch.utils.data import TensorDataset

import scidl


class FrozenSettings(scidl.WorkloadConfig):
    """``task.*`` settings."""

    freeze: bool = Field(True, description="keep the backbone's weights fixed")
    features: int = Field(32, ge=1, description="width of the backbone's output")
    n: int = Field(1024, ge=8, description="training samples")


class Classifier(nn.Module):
    def __init__(self, features: int, classes: int = 4) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, features), nn.ReLU())
        self.head = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def make_task(cfg: FrozenSettings, ctx: scidl.BuildContext) -> scidl.Task:
    """A linear head on a frozen MLP feature extractor (4-class Gaussian blobs)."""
    model = Classifier(cfg.features)
    model.backbone.requires_grad_(not cfg.freeze)
    g = torch.Generator().manual_seed(ctx.seed)
    centres = torch.randn(4, 8, generator=g) * 2
    y = torch.randint(0, 4, (cfg.n,), generator=g)
    x = centres[y] + torch.randn(cfg.n, 8, generator=g)

    def loss(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(m(batch[0]), batch[1])

    def evaluate(m: nn.Module, data: TensorDataset) -> dict[str, float]:
        xs, ys = data.tensors
        return {"accuracy": (m(xs).argmax(1) == ys).float().mean().item()}

    data = TensorDataset(x, y)
    return scidl.Task(model=model, train_data=data, val_data=data, loss=loss, evaluate=evaluate,
                      headline="accuracy", higher_is_better=True)


make_task.defaults = {"optim": {"lr": 1e-2}}  # type: ignore[attr-defined]
