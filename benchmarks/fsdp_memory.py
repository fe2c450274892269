"""Parameter + gradient + optimizer bytes per rank: DDP vs FSDP2 (``parallel.shard=full``).

An MLP (about 4.2 M parameters) trained for a few Adam steps through the normal SciDL
trainer on N = 1, 2, 4 gloo processes. After the last step every rank counts the
storage bytes of what it keeps between steps: its parameters, their gradients and the
optimizer's state tensors (for FSDP the local shards of the DTensors). This is the
persistent part of a rank's training memory; FSDP's transient all-gathered layer (one
unit at a time in forward and backward) and activations are not included. On a GPU
``torch.cuda.max_memory_allocated`` would add them; on CPU the tensors are counted.
Writes benchmarks/results/fsdp_memory.json.

    python benchmarks/fsdp_memory.py [--width 1024] [--nprocs 1 2 4]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from scidl.config import load_config
from scidl.parallel.fsdp import local_bytes
from scidl.runtime.dist import distributed_context
from scidl.runtime.launch import run_distributed
from scidl.train.trainer import Trainer
from scidl.workloads import Task

OUT = Path(__file__).resolve().parent / "results" / "fsdp_memory.json"


def _task(width: int) -> Task:
    torch.manual_seed(0)
    x, y = torch.randn(64, 64), torch.randn(64, 1)
    mse = nn.functional.mse_loss
    model = nn.Sequential(nn.Linear(64, width), nn.Tanh(), *[m for _ in range(4) for m in
                          (nn.Linear(width, width), nn.Tanh())], nn.Linear(width, 1))
    return Task(model=model, train_data=TensorDataset(x, y), loss=lambda m, b: mse(m(b[0]), b[1]),
                criterion=mse, evaluate=lambda m, d: {}, val_data=None)


def measure(rank: int, world: int, shard: str, width: int, run_dir: str) -> dict[str, int]:
    """One layout on this rank: bytes of parameters, gradients and optimizer state."""
    torch.set_num_threads(1)
    cfg = load_config("admissions", overrides=[
        "log.tensorboard=false", "log.progress=false", "train.max_steps=3", "checkpoint.final=false",
        "checkpoint.best=false", "optim.name=adam", "train.global_batch_size=16",
        f"parallel.shard={shard}", f"log.run_dir={run_dir}"])
    with distributed_context() as dctx:
        tr = Trainer(cfg, _task(width), dctx, Path(run_dir))
        tr.fit()
        params = list(tr.model.parameters())
        state = [v for s in tr.optimizer.state.values() for v in s.values()
                 if isinstance(v, torch.Tensor) and v.dim() > 0]
        return {"params": local_bytes(params),
                "grads": local_bytes(p.grad for p in params if p.grad is not None),
                "optimizer": local_bytes(state),
                "n_params": sum(p.numel() for p in params)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--nprocs", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args(argv)
    rows = []
    for n in args.nprocs:
        for shard in ("none", "full"):
            with tempfile.TemporaryDirectory() as tmp:
                per_rank = run_distributed(measure, n, shard, args.width, tmp, timeout=600)
            total = [r["params"] + r["grads"] + r["optimizer"] for r in per_rank]
            rows.append({"nproc": n, "layout": "ddp" if shard == "none" else "fsdp_full",
                         "n_params": per_rank[0]["n_params"], "per_rank": per_rank,
                         "max_bytes_per_rank": max(total)})
            print(f"N={n} {rows[-1]['layout']:9s} max bytes/rank {max(total) / 2**20:8.2f} MiB",
                  flush=True)
    for r in rows:
        ddp = next(x for x in rows if x["nproc"] == r["nproc"] and x["layout"] == "ddp")
        r["fraction_of_ddp"] = r["max_bytes_per_rank"] / ddp["max_bytes_per_rank"]
    out = {"benchmark": "fsdp_memory", "width": args.width, "optimizer": "adam",
           "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
           "backend": "gloo", "device": "cpu", "command": "python benchmarks/fsdp_memory.py",
           "results": rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    sys.exit(main() and 0)
