"""SciDL's per-step cost vs a hand-written DDP loop, measured step by step in pairs.

Both loops live in the same 2 gloo processes (``torch.set_num_threads(1)``), train
copies of the same MLP with Adam on the same pre-built batches (fetching is outside
both timings), and alternate one step at a time: pair i runs a plain step and a SciDL
step (``Trainer.train_step``, the body of ``fit``'s loop), in a fresh random order, so
machine noise and cache effects hit both alike. A control loop, an identical second
copy of the plain loop, runs in the same rotation: its ratio to the plain loop is what
the pairing reads where there is no overhead at all (the table's floor). A third loop, the plain one with DDP's
``gradient_as_bucket_view=True`` (what SciDL's ``dense`` strategy sets), runs in the same
rotation, so the ratio against it isolates SciDL's own per-step work from that setting. Each step records wall time
(``perf_counter``) and the CPU time of the whole process (``process_time``: compute
plus the communication threads). The figure is, per model, the median over pairs of
SciDL step ÷ plain step, with its interquartile range and a bootstrap 95 % interval.
The whole rotation runs in ``--launches`` fresh launches of the processes and their pairs
are pooled: within one launch the memory layout can favour one loop over another by a
percent or two for the whole launch (the control reads it), so the bootstrap resamples
launches first and pairs within them, and each launch's median is kept too.
Target: ≤ 1.02. Writes benchmarks/results/engine_overhead.json (render it into
docs/benchmarks.md with ``python scripts/render_docs.py``).

    python benchmarks/engine_overhead.py [--pairs 300] [--launches 3] [--warmup 30] [--batch 64] [--nproc 2]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import TensorDataset

import scidl
from scidl.runtime.dist import distributed_context
from scidl.runtime.launch import run_distributed
from scidl.train.logging import MetricsLogger
from scidl.train.trainer import Trainer
from scidl.workloads import Task

DIM = 64
#: name -> hidden width of a 64 → w → w → w → 1 MLP (2,166,785 and 139,873 parameters)
MODELS = {"mlp_2.2M": 1024, "mlp_140k": 248}


def _model(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(DIM, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))


def _loss(m: nn.Module, b: list[torch.Tensor]) -> torch.Tensor:
    return nn.functional.mse_loss(m(b[0]), b[1])


def _batches(steps: int, batch: int, rank: int, world: int) -> tuple[TensorDataset, list[list[torch.Tensor]]]:
    """The whole data set, and this rank's batches (one per step), built before timing."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps * batch * world, DIM, generator=g)
    data = TensorDataset(x, x[:, :1].sin())
    out = []
    for i in range(steps):
        lo = (i * world + rank) * batch
        out.append([x[lo:lo + batch].contiguous(), data.tensors[1][lo:lo + batch].contiguous()])
    return data, out


def _plain_step(width: int, bucket_view: bool = False) -> Callable[[list[torch.Tensor]], None]:
    """The loop anyone would write: zero_grad, forward, backward (DDP allreduce), step."""
    model = _model(width)
    ddp = DDP(model, gradient_as_bucket_view=bucket_view)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(b: list[torch.Tensor]) -> None:
        opt.zero_grad(set_to_none=True)
        _loss(ddp, b).backward()
        opt.step()

    return step


def _scidl_step(width: int, data: TensorDataset, steps: int, batch: int, root: str,
                rank: int) -> tuple[Trainer, Callable[[list[torch.Tensor]], None]]:
    """SciDL's trainer with its defaults (dense strategy, NaN/Inf skipping, metrics every
    ``train.log_every`` steps to metrics.jsonl), one ``train_step`` per call."""
    cfg = scidl.load_config("admissions", overrides=[
        f"train.max_steps={steps}", f"train.batch_size={batch}", "optim.name=adam", "optim.lr=1e-4",
        "log.tensorboard=false", "log.progress=false", "checkpoint.final=false", f"log.run_dir={root}"])
    task = Task(model=_model(width), train_data=data, loss=_loss, evaluate=lambda m, d: {}, val_data=None)
    with distributed_context() as dctx:
        tr = Trainer(cfg, task, dctx, Path(root))
    if rank == 0:  # what fit() opens on rank 0
        tr._logger = MetricsLogger(Path(root), tensorboard=False)
    tr.plan.train()

    def step(b: list[torch.Tensor]) -> None:
        tr.train_step([b])

    return tr, step


def _timed(fn: Callable[[list[torch.Tensor]], None], b: list[torch.Tensor]) -> tuple[float, float, float]:
    w0, c0, t0 = time.perf_counter(), time.process_time(), time.thread_time()
    fn(b)
    return time.perf_counter() - w0, time.process_time() - c0, time.thread_time() - t0


def _pairs(width: int, args: dict[str, Any], root: str, rank: int, world: int) -> dict[str, Any]:
    steps = args["warmup"] + args["pairs"]
    data, batches = _batches(steps, args["batch"], rank, world)
    plain, plain_bv = _plain_step(width), _plain_step(width, bucket_view=True)
    control = _plain_step(width)  # a second, identical plain loop: the measurement's floor
    tr, ours = _scidl_step(width, data, steps, args["batch"], root, rank)
    loops = [("plain", plain), ("scidl", ours), ("plain_bv", plain_bv), ("control", control)]
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in loops}
    order_rng = random.Random(1234)  # the same seed on every rank: the same order everywhere
    gc.collect()
    for i, b in enumerate(batches):
        # a fresh random order per pair: each loop runs in every position and after every
        # other loop equally often on average (a fixed rotation of four loops keeps two of
        # them in even positions and two in odd ones)
        order = list(loops)
        order_rng.shuffle(order)
        for name, fn in order:
            t = _timed(fn, b)
            if i >= args["warmup"]:
                times[name].append(t)
    if tr._logger is not None:
        tr._logger.close()
    same = all(torch.equal(a, b) for a, b in zip(plain_params(plain), tr.model.parameters(), strict=True))
    return {"times": times, "skipped": tr.skipped_steps, "same_weights": same}


def plain_params(step: Callable[..., None]) -> list[torch.Tensor]:
    """The plain loop's parameters (its DDP module, from the closure)."""
    cells = {c.cell_contents for c in step.__closure__ or () if isinstance(c.cell_contents, DDP)}
    return list(next(iter(cells)).module.parameters())


def _worker(rank: int, world: int, args: dict[str, Any], root: str) -> dict[str, Any]:
    out = {name: _pairs(MODELS[name], args, f"{root}/{name}", rank, world) for name in args["models"]}
    for res in out.values():
        res["cores"] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return out


def _quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def ratio_stats(ours: list[float], plain: list[float], boot: int = 2000,
                launches: list[int] | None = None) -> dict[str, Any]:
    """Median of the paired ratios ours_i / plain_i, its IQR and a bootstrap 95 % interval.

    ``launches``: how many pairs each fresh launch contributed, in order. The bootstrap
    then resamples launches first and pairs within each (a launch's memory layout can
    favour one loop over another by a percent or two for the whole launch, so its pairs
    are not independent), and the per-launch medians are reported too."""
    r = [a / b for a, b in zip(ours, plain, strict=True)]
    sizes = launches or [len(r)]
    groups, start = [], 0
    for n in sizes:
        groups.append(r[start:start + n])
        start += n
    rng = random.Random(0)
    meds = []
    for _ in range(boot):
        sample: list[float] = []
        for g in rng.choices(groups, k=len(groups)):
            sample.extend(rng.choices(g, k=len(g)))
        meds.append(statistics.median(sample))
    meds.sort()
    return {"ratio": statistics.median(r), "iqr": [_quantile(r, 0.25), _quantile(r, 0.75)],
            "ci95": [_quantile(meds, 0.025), _quantile(meds, 0.975)],
            "per_launch": [statistics.median(g) for g in groups],
            "plain_ms": statistics.median(plain) * 1e3, "scidl_ms": statistics.median(ours) * 1e3,
            "extra_ms": statistics.median(a - b for a, b in zip(ours, plain, strict=True)) * 1e3}


def pool_launches(launches: list[list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[int]]:
    """Each launch's per-rank results joined into one per-rank list (times concatenated
    in launch order, weights equal and skipped steps summed over launches); and how many
    pairs each launch gave."""
    pooled: list[dict[str, Any]] = []
    for rank_results in zip(*launches, strict=True):
        out: dict[str, Any] = {}
        for name in rank_results[0]:
            parts = [lr[name] for lr in rank_results]
            out[name] = {"times": {k: [t for p in parts for t in p["times"][k]] for k in parts[0]["times"]},
                         "skipped": sum(p["skipped"] for p in parts),
                         "same_weights": all(p["same_weights"] for p in parts),
                         "cores": [p.get("cores") for p in parts]}
        pooled.append(out)
    first = launches[0][0]
    name = next(iter(first))
    return pooled, [len(lr[0][name]["times"]["plain"]) for lr in launches]


def summarize(res: list[dict[str, Any]], launches: list[int] | None = None) -> dict[str, Any]:
    """Per model: wall and CPU statistics from rank 0's pairs (every rank's wall ratio too)."""
    out = {}
    for name in res[0]:
        width = MODELS[name]
        per_rank = [r[name] for r in res]
        t = per_rank[0]["times"]
        col = {k: list(zip(*t[k], strict=True)) for k in ("plain", "scidl", "plain_bv", "control")}

        def stats(a: str, b: str, i: int, col: dict[str, list[Any]] = col) -> dict[str, Any]:
            return ratio_stats(list(col[a][i]), list(col[b][i]), launches=launches)

        out[name] = {
            "width": width,
            "params": sum(p.numel() for p in _model(width).parameters()),
            "pairs": len(t["plain"]),
            "wall": stats("scidl", "plain", 0),
            "cpu": stats("scidl", "plain", 1),
            "cpu_main_thread": stats("scidl", "plain", 2),
            # an identical plain loop against the plain loop: what "overhead" the pairing
            # measures where there is none (its distance from 1 is the table's floor)
            "control": {"wall": stats("control", "plain", 0), "cpu": stats("control", "plain", 1)},
            "vs_bucket_view": {"wall": stats("scidl", "plain_bv", 0), "cpu": stats("scidl", "plain_bv", 1)},
            "wall_ratio_per_rank": [
                statistics.median(a[0] / b[0] for a, b in zip(r["times"]["scidl"], r["times"]["plain"],
                                                              strict=True)) for r in per_rank],
            "same_weights": all(r["same_weights"] for r in per_rank),
            "skipped_steps": per_rank[0]["skipped"],
            # each rank's CPU affinity in each launch (one core each when bound)
            "cores": [r.get("cores") for r in per_rank],
        }
    return out


def binding_effect(bound: list[list[dict[str, Any]]], unbound: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Per model and loop: the median step time of each bound launch ÷ that of the unbound
    launch run next to it (launches alternate), rank 0's wall times."""
    out: dict[str, Any] = {}
    for name in bound[0][0]:
        loops = {}
        for loop in ("plain", "scidl"):
            ratios = [statistics.median(t[0] for t in b[0][name]["times"][loop])
                      / statistics.median(t[0] for t in u[0][name]["times"][loop])
                      for b, u in zip(bound, unbound, strict=True)]
            loops[loop] = {"per_launch_pair": ratios, "median": statistics.median(ratios)}
        out[name] = loops
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--pairs", type=int, default=300, help="timed step pairs per model and launch (≥ 150)")
    ap.add_argument("--launches", type=int, default=3,
                    help="fresh launches of the processes, their pairs pooled (≥ 1)")
    ap.add_argument("--warmup", type=int, default=30, help="untimed pairs first")
    ap.add_argument("--batch", type=int, default=64, help="samples per rank per step")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                    help="models to measure (the published table has both)")
    ap.add_argument("--bind-cores", choices=["auto", "true", "false"], default="auto",
                    help="dist.bind_cores for the launches (auto: one core per process when "
                         "there are as many processes as cores)")
    ap.add_argument("--unbound-too", action="store_true",
                    help="alternate each launch with one whose processes are not bound to "
                         "cores: the table for those too, and bound ÷ unbound step times")
    ap.add_argument("--out", default="benchmarks/results/engine_overhead.json")
    args = ap.parse_args()
    if args.pairs < 150:
        ap.error("--pairs must be at least 150")
    if args.launches < 1:
        ap.error("--launches must be at least 1")
    bind = {"auto": "auto", "true": True, "false": False}[args.bind_cores]
    load_before = os.getloadavg()
    runs, free = [], []
    for i in range(args.launches):  # fresh processes each time: fresh memory layouts
        kinds = [(bind, runs)] + ([(False, free)] if args.unbound_too else [])
        for setting, into in kinds if i % 2 == 0 else kinds[::-1]:
            with tempfile.TemporaryDirectory() as root:
                into.append(run_distributed(_worker, args.nproc, vars(args), root, timeout=3600,
                                            bind_cores=setting))
        print(f"launch {i + 1}/{args.launches} done", flush=True)
    load_after = os.getloadavg()
    res, sizes = pool_launches(runs)
    models = summarize(res, sizes)
    unbound = summarize(*pool_launches(free)) if free else None
    print(f"{'model':<10}{'params':>11}{'plain ms':>10}{'SciDL ms':>10}  {'wall ratio [IQR]':<24}"
          f"{'CPU ratio [IQR]':<24}")
    for name, m in models.items():
        w, c = m["wall"], m["cpu"]
        print(f"{name:<10}{m['params']:>11,}{w['plain_ms']:>10.2f}{w['scidl_ms']:>10.2f}  "
              f"{w['ratio']:.3f} [{w['iqr'][0]:.3f}, {w['iqr'][1]:.3f}]".ljust(24 + 41)
              + f"{c['ratio']:.3f} [{c['iqr'][0]:.3f}, {c['iqr'][1]:.3f}]")
    for name, m in models.items():
        v = m["vs_bucket_view"]
        print(f"{name:<10} vs plain with gradient_as_bucket_view: wall {v['wall']['ratio']:.3f}, "
              f"CPU {v['cpu']['ratio']:.3f}")
    for name, m in models.items():
        c = m["control"]
        print(f"{name:<10} control (identical plain loop ÷ plain): wall {c['wall']['ratio']:.3f}, "
              f"CPU {c['cpu']['ratio']:.3f}")
    for name, m in models.items():
        print(f"{name:<10} per launch: wall " + ", ".join(f"{x:.3f}" for x in m["wall"]["per_launch"])
              + "; control wall " + ", ".join(f"{x:.3f}" for x in m["control"]["wall"]["per_launch"]))
    for name, m in models.items():
        print(f"{name:<10} cores per rank (first launch): {[c[0] if c else None for c in m['cores']]}")
    effect = binding_effect(runs, free) if free else None
    if unbound is not None and effect is not None:
        for name, m in unbound.items():
            print(f"{name:<10} unbound: wall {m['wall']['ratio']:.3f}, CPU {m['cpu']['ratio']:.3f}; "
                  f"step bound ÷ unbound: plain {effect[name]['plain']['median']:.3f}, "
                  f"SciDL {effect[name]['scidl']['median']:.3f}")
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (target <= 1.02)")
    out = {
        "benchmark": "engine_overhead", "target": 1.02, "models": models,
        **({"unbound": {"models": unbound, "bound_over_unbound": effect}} if unbound else {}),
        "config": {"pairs": args.pairs, "launches": args.launches, "warmup": args.warmup, "batch": args.batch,
                   "bind_cores": args.bind_cores,
                   "nproc": args.nproc, "backend": "gloo", "device": "cpu", "threads_per_process": 1,
                   "optimizer": "adam", "dim": DIM},
        "load_avg": {"before": list(load_before), "after": list(load_after)},
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0],
                     "scidl": getattr(scidl, "__version__", None)},
        "hardware": {"machine": platform.machine(), "cpus": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/engine_overhead.py " + " ".join(sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
