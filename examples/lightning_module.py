"""A Lightning ``LightningModule`` and ``LightningDataModule``, trained by SciDL.

The module is ordinary Lightning code (``training_step``, ``validation_step`` with
``self.log``); :func:`scidl.adapters.lightning.lightning_task` turns it into a SciDL task,
so SciDL's launchers, communication strategies, optimizers, checkpoints and scaling tools
apply to it:

    scidl train examples/lightning_module.py:make_task --nproc 2 --epochs 10 optim.lr=3e-3

Needs the ``lightning`` package.
"""

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import scidl
from scidl.adapters.lightning import lightning_task


class Heat1D(L.LightningModule):
    """Learns the 1-D heat kernel's solution u(x, t) = exp(-pi^2 t) sin(pi x) from samples."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                                 nn.Linear(width, 1))

    def training_step(self, batch, batch_idx):
        x, u = batch
        loss = nn.functional.mse_loss(self.net(x), u)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, u = batch
        pred = self.net(x)
        self.log("val_loss", nn.functional.mse_loss(pred, u))
        self.log("val_rel_l2", torch.linalg.vector_norm(pred - u) / torch.linalg.vector_norm(u))


class HeatData(L.LightningDataModule):
    def __init__(self, seed: int, n: int = 2048) -> None:
        super().__init__()
        self.seed, self.n = seed, n

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(self.seed)  # the same samples on every rank
        x = torch.rand(self.n + 512, 2, generator=g) * torch.tensor([1.0, 0.2])
        u = torch.exp(-torch.pi ** 2 * x[:, 1:]) * torch.sin(torch.pi * x[:, :1])
        self.train, self.val = TensorDataset(x[:self.n], u[:self.n]), TensorDataset(x[self.n:], u[self.n:])

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=64, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=256)


def make_task(ctx: scidl.BuildContext) -> scidl.Task:
    return lightning_task(Heat1D(), HeatData(ctx.seed), headline="val_rel_l2")


if __name__ == "__main__":
    import sys

    cfg = scidl.load_config(make_task, overrides=["train.epochs=10", "optim.lr=3e-3", "dist.nproc=2",
                                                  *sys.argv[1:]])
    print(scidl.run(cfg).headline)
