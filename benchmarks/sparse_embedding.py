"""Step time of a sparse-embedding model: SciDL's trainer vs a hand-written torch DDP loop.

Model: ``nn.Embedding(V, D, sparse=True)`` → mean over the sequence → ``Linear(D, 1)``, on
2 gloo processes. The plain loop is what torch users write: DDP (its native sparse
allreduce) and SGD applying the sparse gradient. SciDL runs the same model, data and
batch through :class:`~scidl.train.trainer.Trainer` under several ``comm.strategy`` values:
``dense`` reduces the gradient as torch does (sparse allreduce; with Adam it is densified
afterwards), the compression strategies get it dense (sparse-as-dense). The figure is
median(SciDL step) / median(plain step) over interleaved repeats in the same processes
(the first 2 steps of each run are warm-up and not counted).
Writes benchmarks/results/sparse_embedding.json.

    python benchmarks/sparse_embedding.py [--steps 12] [--repeats 3] [--sizes 2000x32 50257x768]
"""

from __future__ import annotations

import argparse
import json
import os
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
from torch.utils.data import TensorDataset

import scidl
from scidl.config import load_config
from scidl.runtime.dist import distributed_context
from scidl.runtime.launch import run_distributed
from scidl.train.trainer import Trainer
from scidl.workloads import Task

BATCH, SEQ = 16, 32  # per rank: 512 looked-up rows per step

# (strategy, optimizer) runs of SciDL's trainer
VARIANTS = [("dense", "sgd"), ("dense", "adam"), ("fp16", "sgd"), ("topk", "sgd"),
            ("topk", "adam")]


class Bag(nn.Module):
    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, sparse=True)
        self.out = nn.Linear(dim, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(ids).mean(1))


def _data(vocab: int, n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randint(0, vocab, (n, SEQ), generator=g), torch.randn(n, 1, generator=g))


def _loss(m: nn.Module, b: list[torch.Tensor]) -> torch.Tensor:
    return nn.functional.mse_loss(m(b[0]), b[1])


def _plain(vocab: int, dim: int, data: TensorDataset, steps: int) -> list[float]:
    torch.manual_seed(0)
    model = Bag(vocab, dim)
    ddp = DDP(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    r = dist.get_rank()
    times = []
    for s in range(steps):
        lo = (2 * s + r) * BATCH % (len(data) - BATCH)
        x, y = data.tensors[0][lo:lo + BATCH], data.tensors[1][lo:lo + BATCH]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        _loss(ddp, (x, y)).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def _scidl(vocab: int, dim: int, data: TensorDataset, steps: int, strategy: str, opt: str,
           root: str) -> list[float]:
    torch.manual_seed(0)
    task = Task(model=Bag(vocab, dim), train_data=data, loss=_loss, evaluate=lambda m, d: {})
    cfg = load_config("admissions", overrides=[
        "log.tensorboard=false", "log.progress=false", "checkpoint.final=false",
        f"log.run_dir={root}/{vocab}-{strategy}-{opt}", f"train.max_steps={steps}",
        f"train.batch_size={BATCH}", f"comm.strategy={strategy}", f"optim.name={opt}",
        "optim.lr=0.01", "optim.momentum=0", "train.log_every=1000"])
    with distributed_context() as dctx:
        tr = Trainer(cfg, task, dctx, Path(cfg.log.run_dir))
        tr.fit()
    return list(tr.step_times)


def _bench(rank: int, world: int, sizes: list[tuple[int, int]], steps: int, repeats: int,
           root: str) -> dict:
    """Repeats interleave plain and SciDL runs, so machine noise hits all of them alike."""
    out = {}
    for vocab, dim in sizes:
        data = _data(vocab, 4096)
        plain: list[float] = []
        runs: dict[str, list[float]] = {f"{s}/{o}": [] for s, o in VARIANTS}
        for rep in range(repeats):
            plain += _plain(vocab, dim, data, steps)[2:]
            for strategy, opt in VARIANTS:
                t = _scidl(vocab, dim, data, steps, strategy, opt, f"{root}/{rep}")
                runs[f"{strategy}/{opt}"] += t[2:]
        base = statistics.median(plain)
        out[f"{vocab}x{dim}"] = {"plain_step_s": base, "scidl": {
            k: {"step_s": statistics.median(v), "ratio": statistics.median(v) / base}
            for k, v in runs.items()}}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", nargs="+", default=["2000x32", "50257x768"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sparse_embedding.json"))
    args = ap.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    with tempfile.TemporaryDirectory() as root:
        res = run_distributed(_bench, 2, sizes, args.steps, args.repeats, root, timeout=3600)[0]
    doc = {
        "benchmark": "sparse_embedding",
        "config": {"nproc": 2, "backend": "gloo", "batch_per_rank": BATCH, "seq": SEQ,
                   "steps": args.steps, "repeats": args.repeats, "plain": "torch DDP + SGD (sparse gradient)"},
        "results": res,
        "versions": {"scidl": scidl.__version__, "torch": torch.__version__,
                     "python": sys.version.split()[0]},
        "hardware": {"machine": platform.machine(), "cpus": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    for size, r in res.items():
        print(size, f"plain {r['plain_step_s'] * 1e3:.1f} ms",
              "  ".join(f"{k} {v['ratio']:.2f}x" for k, v in r["scidl"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
