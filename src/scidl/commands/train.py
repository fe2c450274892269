"""``scidl train``: train a workload (locally on N processes, or as one rank under a launcher)."""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

NAME = "train"
HELP = "train a workload; overrides as key=value (e.g. train.batch_size=64)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scidl.commands.options import option

    option(p, "workload", nargs="?", choices_from="scidl.workloads.registry:WORKLOADS",
           help="workload name (see `scidl workloads`) or a task factory module:attr; not needed with --config or --resume")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--config", "-c",
                   help="YAML run config (e.g. a search's best.yaml; default: the workload's "
                   "defaults)")
    option(p, "--nproc", type=int, config_key="dist.nproc", help="local processes")
    option(p, "--max-restarts", type=int, config_key="dist.max_restarts",
           help="elastic restarts after a failure")
    option(p, "--seed", type=int, config_key="train.seed",
           help="seed of model init, data generation and data order")
    option(p, "--comm", config_key="comm.strategy", choices_from="scidl.comm.registry:STRATEGIES",
           help="gradient communication strategy")
    option(p, "--optim", config_key="optim.name", choices_from="scidl.optim.registry:OPTIMIZERS",
           help="optimizer")
    option(p, "--epochs", type=int, config_key="train.epochs", help="passes over the data")
    option(p, "--max-steps", type=int, config_key="train.max_steps", aliases=("--steps",),
           help="optimizer steps; none: --epochs decides")
    option(p, "--out", metavar="RUN_DIR", dest="run_dir", config_key="log.run_dir",
           aliases=("--run-dir",),
           help="the run folder to write; none: a new timestamped folder under log.root")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its newest good checkpoint "
                   "(default: start a new run)")
    p.add_argument("--restart-from-scratch", action="store_true",
                   help="with --resume: train from step 0 when no checkpoint is usable "
                        "(default: fail)")
    p.add_argument("--extend", action="store_true",
                   help="with --resume and a larger budget: stretch the LR schedule to the new "
                        "total (default: keep the schedule the run started with)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    nodes = p.add_argument_group(
        "several nodes", "torchrun-style: start `scidl train ... --nproc K --nnodes N "
        "--rdzv-endpoint HEAD:PORT` once per node (defaults from torchrun's PET_* variables; "
        "under srun with one task per node and --nproc > 1, from Slurm's), or let "
        "--cluster start one per node of a virtual cluster (docs/cluster.md)")
    option(nodes, "--nnodes", type=int, help="nodes in the job (none: PET_NNODES, Slurm, or 1)")
    option(nodes, "--node-rank", type=int,
           help="this node's index; node 0 hosts the rendezvous (none: PET_NODE_RANK, or "
                "torch decides)")
    option(nodes, "--rdzv-endpoint", metavar="HOST[:PORT]",
           help="where the node launchers meet, on the head node (port 29400 if not given)")
    option(nodes, "--rdzv-id", help="job id shared by the node launchers (none: scidl)")
    option(nodes, "--local-addr", help="this node's address as the other nodes reach it "
                                       "(none: the host name)")
    option(nodes, "--cluster", metavar="NAME",
           help="run on the virtual cluster NAME (scidl cluster up): one launcher per node")
    option(nodes, "--ranks-per-node", type=int,
           help="with --cluster: processes per node (none: --nproc, or 1)")
    option(nodes, "--cluster-timeout", type=float, default=3600.0,
           help="with --cluster: stop every node after this many seconds")


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    extra: dict[str, Any] = {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            extra.setdefault(section, {})[key] = value

    put("dist", "nproc", args.nproc)
    put("dist", "max_restarts", args.max_restarts)
    put("train", "seed", args.seed)
    put("train", "epochs", args.epochs)
    put("train", "max_steps", args.max_steps)
    put("comm", "strategy", args.comm)
    put("optim", "name", args.optim)
    put("log", "run_dir", args.run_dir)
    if args.quiet:
        put("log", "progress", False)
    return extra


def reports(env: Mapping[str, str]) -> bool:
    """Whether this process prints the run folder and summary: the global rank 0 of the
    job (under torchrun, Slurm or MPI every rank runs this command; one process when not
    launched). Says nothing itself: the run has already reported launcher problems."""
    from scidl.runtime.env import detect_launch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return detect_launch(env).rank == 0


def _announce(run_dir: Path) -> None:
    print(f"run folder: {run_dir}", flush=True)


def run(args: argparse.Namespace) -> int:
    from scidl.cli import UserError
    from scidl.config import ConfigError, load_config
    from scidl.train.api import run as run_training
    from scidl.train.checkpoint import CheckpointError

    overrides = list(args.overrides)
    workload = args.workload
    if workload and "=" in workload:  # `scidl train --config f.yaml key=value`
        overrides.insert(0, workload)
        workload = None
    if args.ranks_per_node is not None and not args.cluster:
        raise UserError("--ranks-per-node only applies with --cluster NAME (use --nproc)")
    config_path = args.config
    extra = _flags(args)
    if args.resume:
        run_dir = Path(args.resume)
        if args.run_dir and Path(args.run_dir).absolute() != run_dir.absolute():
            raise UserError(f"--resume {run_dir} and --out {args.run_dir} name different "
                            "folders; --resume continues its own run folder")
        if args.config:
            raise UserError("--resume uses the run's own config.yaml; do not pass --config")
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"--resume {run_dir}: no config.yaml there (not a run folder?)")
        config_path = str(run_dir / "config.yaml")
        extra.setdefault("log", {})["run_dir"] = str(run_dir)
    if not workload and not config_path:
        raise ConfigError("name a workload (see `scidl workloads`) or pass --config FILE")
    if args.restart_from_scratch and not args.resume:
        raise UserError("--restart-from-scratch only applies with --resume RUN_DIR")
    if args.extend and not args.resume:
        raise UserError("--extend only applies with --resume RUN_DIR (and a new --max-steps or --epochs)")
    cfg = load_config(workload, config_path, overrides, extra)  # bad input: one line, here
    if args.cluster:  # the node launchers run this command again, one per node
        from scidl.cluster.launch import train_on_cluster

        return train_on_cluster(args)
    from scidl.runtime.launch import node_spec

    nodes = node_spec(args.nnodes, args.node_rank, args.rdzv_endpoint, args.rdzv_id,
                      args.local_addr, nproc=cfg.dist.nproc)
    try:
        result = run_training(cfg, resume=bool(args.resume),
                              restart_from_scratch=args.restart_from_scratch,
                              on_run_dir=_announce, extend=args.extend, nodes=nodes)
    except CheckpointError as e:  # no usable checkpoint, full disk: one line, exit 2
        raise UserError(str(e)) from None
    if not result.reports or (not nodes.multi and not reports(os.environ)):
        return 0
    name, value = result.headline
    s = result.summary
    shown = f"{value:.4g}" if isinstance(value, (int, float)) else "n/a"
    print(
        f"{cfg.workload_label()}: {name} = {shown} after {s['steps']} steps on {s['world_size']} "
        f"process(es) [{s['backend']}], {s['wall_s']:.1f} s, "
        f"{(s.get('samples_per_s') or 0):.0f} samples/s"
    )
    line = best_final_line(s)
    if line:
        print(line)
    print(results_line(result.run_dir))
    return 0


def results_line(run_dir: Path) -> str:
    """The last line of ``scidl train``: where the results are and how to see them (the
    run folder's own line opened the output)."""
    return f"results: {run_dir / 'summary.json'} · report: scidl report {run_dir}"


def best_final_line(summary: Mapping[str, Any]) -> str | None:
    """``best: rel_l2 0.034 at step 2000 · final: rel_l2 0.054 at step 3000`` (and why the
    run stopped early); None when the run was never evaluated on its headline metric."""
    best, final = summary.get("best"), summary.get("final") or {}
    if not best:
        return None
    parts = [f"best: {best['metric']} {best['value']:.4g} at step {best['step']}"]
    if isinstance(final.get("value"), (int, float)):
        parts.append(f"final: {final['metric']} {final['value']:.4g} at step {final['step']}")
    if summary.get("stopped_early"):
        parts.append(f"stopped early at step {summary.get('stopped_at_step')}")
    return " · ".join(parts)
