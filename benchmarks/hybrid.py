"""Pure data parallel vs 2-stage hybrid (pipeline x replicas) at equal process count.

A deep residual network (ResNet-(6n+2) of pre-activation blocks, GroupNorm) on synthetic
32x32 images, trained through the normal SciDL trainer. Each layout runs in fresh
processes, so peak RSS per rank is that layout's own. Reports throughput, peak memory per
rank, the stage-balance report (predicted vs measured step time, bubble) and the ratios.
Writes benchmarks/results/hybrid.json.

    python benchmarks/hybrid.py [--depth 56] [--batch 32] [--steps 12] [--nproc 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from scidl.config import load_config
from scidl.parallel.blocks import resnet_sequential
from scidl.runtime.launch import run_distributed
from scidl.train.api import train_process
from scidl.workloads import Task

DEPTH, WIDTH = 56, 16


def images_task(ctx):
    g = torch.Generator().manual_seed(ctx.seed)
    x = torch.randn(1024, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (1024,), generator=g)
    ce = nn.functional.cross_entropy
    return Task(model=resnet_sequential(DEPTH, WIDTH, in_ch=3, classes=10),
                train_data=TensorDataset(x, y), loss=lambda m, b: ce(m(b[0]), b[1]), criterion=ce,
                evaluate=lambda m, d: {}, val_data=None)


def _worker(rank, world, cfg_dict, depth, width):
    global DEPTH, WIDTH
    DEPTH, WIDTH = depth, width
    summary = train_process(cfg_dict, False, images_task)
    summary["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return summary


def run_layout(name, over, args, root):
    cfg = load_config("digits", overrides=[
        "log.tensorboard=false", "log.progress=false", "checkpoint.final=false",
        f"train.max_steps={args.steps}", f"train.global_batch_size={args.batch}",
        "optim.name=sgd", "optim.lr=0.01", f"log.run_dir={root}/{name}", *over])
    out = run_distributed(_worker, args.nproc, cfg.to_dict(), args.depth, args.width, timeout=1500)
    s = out[0]
    # one step trains on the global batch, whatever the layout (stages share a replica's samples)
    if s["global_batch_size"] != args.batch:
        raise RuntimeError(f"{name}: summary global batch {s['global_batch_size']} != {args.batch}")
    return {
        "layout": name, "samples_per_s": s["samples_per_s"], "step_time_s": s["step_time_s"],
        "step_time_median_s": s.get("step_time_median_s"),
        "global_batch_size": s["global_batch_size"], "data_parallel_size": s.get("data_parallel_size"),
        "peak_rss_mb_per_rank": [o["peak_rss_mb"] for o in out],
        "pipeline": s.get("pipeline"),
    }


def _combine(runs: list[dict], base_runs: list[dict]) -> dict:
    """One layout over the rounds: median step time, and the throughput ratio to data
    parallelism per round (paired) with its median and range."""
    steps = [r["step_time_s"] for r in runs]
    ratios = [b["step_time_s"] / r["step_time_s"] for r, b in zip(runs, base_runs, strict=True)]
    out = dict(runs[-1])
    out["repeat_step_times_s"] = steps
    out["step_time_s"] = statistics.median(steps)
    out["samples_per_s"] = out["global_batch_size"] / out["step_time_s"]
    out["throughput_ratios"] = ratios  # same global batch: ratio of step times, per round
    out["throughput_ratio"] = statistics.median(ratios)
    out["peak_rss_mb_per_rank"] = [max(r["peak_rss_mb_per_rank"][i] for r in runs)
                                   for i in range(len(runs[0]["peak_rss_mb_per_rank"]))]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=56)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32, help="global batch")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--microbatches", type=int, default=4)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds of all layouts")
    ap.add_argument("--out", default="benchmarks/results/hybrid.json")
    ap.add_argument("--note", default=None, help="recorded in the results (e.g. how busy the machine was)")
    args = ap.parse_args()
    layouts = [
        ("data_parallel", []),
        ("hybrid_2stage_1f1b", ["parallel.pipeline_stages=2", f"parallel.microbatches={args.microbatches}"]),
        ("hybrid_2stage_gpipe", ["parallel.pipeline_stages=2", f"parallel.microbatches={args.microbatches}",
                                 "parallel.schedule=gpipe"]),
    ]
    rounds: list[dict[str, dict]] = []
    with tempfile.TemporaryDirectory() as root:
        for rep in range(args.repeats):
            order = layouts[rep % len(layouts):] + layouts[:rep % len(layouts)]
            rounds.append({n: run_layout(n, o, args, f"{root}/r{rep}") for n, o in order})
    results = [_combine([rnd[n] for rnd in rounds], [rnd[layouts[0][0]] for rnd in rounds])
               for n, _ in layouts]
    base = results[0]
    print(f"ResNet-{args.depth} width {args.width}, 32x32x3 images, global batch {args.batch}, "
          f"{args.nproc} processes (gloo, CPU)")
    print(f"{'layout':<22}{'samples/s':>10}{'step (s)':>10}{'peak RSS/rank (MB)':>22}"
          f"{'thr. ratio':>12}{'mem ratio':>11}{'pred. step':>12}{'bubble':>8}")
    for r in results:
        mem = max(r["peak_rss_mb_per_rank"])
        r["memory_ratio"] = mem / max(base["peak_rss_mb_per_rank"])
        p = r["pipeline"] or {}
        print(f"{r['layout']:<22}{r['samples_per_s']:>10.1f}{r['step_time_s']:>10.3f}"
              f"{' / '.join(f'{m:.0f}' for m in r['peak_rss_mb_per_rank']):>22}"
              f"{r['throughput_ratio']:>12.2f}{r['memory_ratio']:>11.2f}"
              f"{p.get('predicted_step_s', float('nan')):>12.3f}{p.get('bubble_fraction', 0):>8.2f}")
    out = {"benchmark": "hybrid", "results": results, "config": vars(args),
           "step_time": "mean step time after the first step in each run; median over the rounds; "
                        "samples_per_s = global batch / it; throughput_ratios paired per round",
           **({"note": args.note} if args.note else {}),
           "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
           "hardware": {"machine": platform.machine(), "cpus": __import__("os").cpu_count()},
           "date": time.strftime("%Y-%m-%d")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
