"""Keep your own training loop; SciDL makes it data-parallel (Accelerate/Fabric style).

    torchrun --nproc-per-node 2 examples/own_loop.py      # or srun / mpirun / python

``scidl.setup`` starts the process group from the launcher's environment, wraps the
model in DDP with the chosen gradient communication (here PowerSGD after 10 dense
steps) and shards the loader; the loop below is plain PyTorch.
"""

import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import scidl
from scidl.comm.config import CommConfig


def main(epochs: int = 5) -> float:
    torch.manual_seed(0)  # the same initial model on every rank
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1024, 16, generator=g)
    y = x.pow(2).sum(1, keepdim=True) / 16
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    model, optimizer, loader = scidl.setup(
        model, optimizer, loader, comm=CommConfig(strategy="powersgd", rank=2, warmup_steps=10))

    for epoch in range(epochs):
        total = torch.zeros(2)
        for xb, yb in loader:  # this rank's shard, reshuffled each epoch
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(xb), yb)
            loss.backward()  # gradients reduced by PowerSGD inside DDP
            optimizer.step()
            total += torch.tensor([loss.item() * len(xb), len(xb)])
        dist.all_reduce(total)
        if dist.get_rank() == 0:
            print(f"epoch {epoch}: loss {total[0] / total[1]:.4f} on {dist.get_world_size()} process(es)",
                  flush=True)
    final = float(total[0] / total[1])
    dist.destroy_process_group()
    return final


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
