"""SciDL step time vs a hand-written DDP loop: same model, batch and data, 2 processes.

Both loops run in the same processes, interleaved in repeats (A, B, A, B, ...), so machine
noise hits both alike; the reported figure is median(SciDL step) / median(plain step).
Target: ≤ 1.02. Writes benchmarks/results/engine_overhead.json.

    python benchmarks/engine_overhead.py [--steps 30] [--repeats 5] [--width 1024] [--nproc 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import scidl
from scidl.runtime.dist import distributed_context
from scidl.runtime.launch import run_distributed
from scidl.train.trainer import Trainer
from scidl.workloads import Task


def _data(n: int, d: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    return TensorDataset(x, x[:, :1].sin())


def _model(d: int, width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))


def _loss(m: nn.Module, b: list[torch.Tensor]) -> torch.Tensor:
    return nn.functional.mse_loss(m(b[0]), b[1])


def _plain(data: TensorDataset, width: int, steps: int, batch: int) -> float:
    model = _model(data.tensors[0].shape[1], width)
    ddp = DDP(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    sampler = DistributedSampler(data, dist.get_world_size(), dist.get_rank(), seed=0, drop_last=True)
    loader = iter(DataLoader(data, batch_size=batch, sampler=sampler, drop_last=True))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        x, y = next(loader)
        opt.zero_grad(set_to_none=True)
        loss = _loss(ddp, [x, y])
        loss.backward()
        opt.step()
        loss.item()  # both loops read the loss once per step
        times.append(time.perf_counter() - t0)
    return statistics.median(times[2:])


def _scidl(data: TensorDataset, width: int, steps: int, batch: int, root: str) -> float:
    cfg = scidl.load_config("admissions", overrides=[
        f"train.max_steps={steps}", f"train.batch_size={batch}", "optim.lr=1e-4",
        "log.tensorboard=false", "log.progress=false", "checkpoint.final=false",
        "train.log_every=1000000", f"log.run_dir={root}"])
    task = Task(model=_model(data.tensors[0].shape[1], width), train_data=data, loss=_loss,
                evaluate=lambda m, d: {}, val_data=None)
    with distributed_context() as dctx:
        tr = Trainer(cfg, task, dctx, Path(root))
        tr.fit()
    return statistics.median(tr.step_times[2:])


def _worker(rank: int, world: int, args: dict, root: str) -> dict:
    data = _data(args["batch"] * world * (args["steps"] + 2), 64)
    plain, ours = [], []
    for r in range(args["repeats"]):
        plain.append(_plain(data, args["width"], args["steps"], args["batch"]))
        ours.append(_scidl(data, args["width"], args["steps"], args["batch"], f"{root}/r{r}"))
    return {"plain": plain, "scidl": ours}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/engine_overhead.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        res = run_distributed(_worker, args.nproc, vars(args), root, timeout=1800)[0]
    plain, ours = statistics.median(res["plain"]), statistics.median(res["scidl"])
    ratio = ours / plain
    params = sum(p.numel() for p in _model(64, args.width).parameters())
    print(f"{'loop':<12}{'median step (ms)':>18}  repeats (ms)")
    print(f"{'plain DDP':<12}{plain * 1e3:>18.2f}  " + " ".join(f"{t * 1e3:.1f}" for t in res["plain"]))
    print(f"{'SciDL':<12}{ours * 1e3:>18.2f}  " + " ".join(f"{t * 1e3:.1f}" for t in res["scidl"]))
    print(f"overhead ratio SciDL/plain = {ratio:.3f} (target <= 1.02)")
    out = {
        "benchmark": "engine_overhead", "ratio": ratio, "target": 1.02,
        "plain_step_s": plain, "scidl_step_s": ours, "repeats": res,
        "config": {**vars(args), "params": params, "backend": "gloo", "device": "cpu"},
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
        "hardware": {"machine": platform.machine(), "cpus": __import__("os").cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
