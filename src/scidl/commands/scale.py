"""``scidl scale``: weak or strong scaling of a workload over several process counts."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

NAME = "scale"
HELP = "run a workload at several process counts; efficiency, comm breakdown, report.html"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scidl.commands.options import option

    option(p, "workload", choices_from="scidl.workloads.registry:WORKLOADS",
           help="workload name (see `scidl workloads`) or a task factory module:attr")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--config", "-c", help="YAML run config (default: the workload's defaults)")
    p.add_argument("--nproc", default="1,2,4", help="process counts, comma-separated")
    p.add_argument("--mode", choices=["weak", "strong"], default="weak",
                   help="weak: fixed per-rank batch; strong: fixed global batch")
    option(p, "--comm", config_key="comm.strategy", choices_from="scidl.comm.registry:STRATEGIES",
           help="gradient communication strategy")
    option(p, "--max-steps", type=int, default=30, aliases=("--steps",),
           help="optimizer steps per point (train.max_steps; the first is a warm-up)")
    p.add_argument("--repeats", type=int, default=1,
                   help="interleaved rounds over the process counts; each point is the median")
    p.add_argument("--hardware", help="preset name or a YAML from `scidl bench-collectives`: adds "
                   "the cost model's prediction next to each measurement (default: none)")
    p.add_argument("--out", help="output folder (default: LOG_ROOT/scale/<workload>-<mode>-<time>)")


def run(args: argparse.Namespace) -> int:
    from scidl.cli import UserError
    from scidl.config import load_config
    from scidl.scaling.measure import run_scaling
    from scidl.scaling.report import render_scale

    try:
        nprocs = sorted({int(x) for x in str(args.nproc).split(",") if x.strip()})
    except ValueError:
        raise UserError(f"--nproc {args.nproc!r}: expected integers like 1,2,4") from None
    if not nprocs or nprocs[0] < 1:
        raise UserError("--nproc: need positive process counts")
    if args.max_steps < 3:
        raise UserError("--max-steps: need at least 3 steps (the first is a warm-up)")
    extra: dict = {"train": {"max_steps": args.max_steps}}
    if args.comm:
        extra["comm"] = {"strategy": args.comm}
    cfg = load_config(args.workload, args.config, list(args.overrides), extra)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or Path(cfg.log.root) / "scale" / f"{cfg.workload_label()}-{args.mode}-{stamp}")
    try:
        data = run_scaling(cfg, nprocs, args.mode, out, hardware=args.hardware,
                           repeats=max(1, args.repeats))
    except ValueError as e:
        raise UserError(str(e)) from None
    report = render_scale(out)
    pred = "predicted_step_s" in data["points"][0]
    head = (f"{'p':>3s} {'batch':>6s} {'samples/s':>10s} {'step_ms':>8s} {'compute':>8s} "
            f"{'comm':>8s} {'exposed':>8s} {'E(p)':>6s}")
    spread = data.get("repeats", 1) > 1
    if spread:
        head += f" {'min-max ms':>15s}"
    if pred:
        head += f" {'pred_ms':>8s} {'pred_E':>6s} {'err':>6s}"
    print(f"{cfg.workload_label()}: {args.mode} scaling, comm={cfg.comm.strategy} (times in ms/step)")
    print(head)
    for q in data["points"]:
        line = (f"{q['ranks']:3d} {q['global_batch']:6d} {q['samples_per_s']:10.1f} "
                f"{q['step_s'] * 1e3:8.2f} {q['compute_s'] * 1e3:8.2f} {q['comm_s'] * 1e3:8.2f} "
                f"{q['exposed_comm_s'] * 1e3:8.2f} {q['efficiency']:6.3f}")
        if spread:
            line += f" {q['step_s_min'] * 1e3:7.1f}-{q['step_s_max'] * 1e3:7.1f}"
        if pred:
            line += (f" {q['predicted_step_s'] * 1e3:8.2f} {q['predicted_efficiency']:6.3f} "
                     f"{q['step_error']:+6.1%}")
        print(line)
    print(f"\nscaling.json and report: {report}")
    return 0
