"""Bring your own model: any nn.Module + dataset + loss, trained by SciDL on 2 processes.

From the command line (the run is filed under runs/byo_model/):

    scidl train examples/byo_model.py:make_task --nproc 2 --epochs 20 optim.lr=3e-3

or from Python, as below: ``python examples/byo_model.py [key=value ...]``.
"""

import sys

import torch
from torch import nn
from torch.utils.data import TensorDataset

import scidl


def make_task(ctx: scidl.BuildContext) -> scidl.Task:
    """A small MLP fitting sin(pi x) cos(pi y) on [-1, 1]^2."""
    g = torch.Generator().manual_seed(ctx.seed)          # same data on every rank
    x = torch.rand(2048, 2, generator=g) * 2 - 1
    y = torch.sin(torch.pi * x[:, :1]) * torch.cos(torch.pi * x[:, 1:])  # your science here
    model = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))

    def loss(m, batch):
        return nn.functional.mse_loss(m(batch[0]), batch[1])

    def evaluate(m, data):
        return {"mse": loss(m, data.tensors).item()}

    data = TensorDataset(x, y)  # map-style: SciDL shards it across ranks
    return scidl.Task(model=model, train_data=data, val_data=data, loss=loss, evaluate=evaluate, headline="mse")


if __name__ == "__main__":  # the spawned processes import this file: keep the launch here
    cfg = scidl.load_config(make_task, overrides=["train.epochs=20", "train.batch_size=64", "optim.lr=3e-3",
                                                  "dist.nproc=2", *sys.argv[1:]])
    result = scidl.run(cfg)
    print(result.run_dir, result.headline)
