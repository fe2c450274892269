"""``scidl topology``: Morse–Smale segmentation of a scalar (e.g. a surrogate's error).

Two inputs: ``--input samples.npz`` with arrays ``X`` (n, d) and ``f`` (n,) (optional
``names``), or ``--run RUN_DIR``: a finished run whose workload evaluates on a reference
grid given as ``val_data = {"xt": (n, d) inputs, "u": (n,) reference}`` (``burgers``); the
scalar is then the trained model's absolute error ``|u_θ(x) − u(x)|``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from scidl.runtime.files import atomic_write_text

NAME = "topology"
HELP = "Morse–Smale cells of a scalar over samples (a surrogate's error): where does it fail?"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="npz file with arrays X (n, d) and f (n,)")
    src.add_argument("--run", metavar="RUN_DIR",
                     help="run folder of a grid-evaluated surrogate (e.g. burgers)")
    p.add_argument("--k", type=int, default=10, help="neighbours per sample")
    p.add_argument("--graph", choices=["knn", "gabriel"], default="knn", help="neighbourhood graph")
    p.add_argument("--persistence", default="auto",
                   help="simplification threshold as a fraction of the range, or 'auto' "
                   "(middle of the largest gap of the persistence diagram; default)")
    p.add_argument("--max-samples", type=int, default=6000, help="random subsample above this")
    p.add_argument("--names", help="comma-separated input names (default: x0,x1,...)")
    p.add_argument("--plot", help="write a PNG of the scalar and the cells (default: none)")
    p.add_argument("--json", dest="json_out",
                   help="write the cell summaries as JSON (default: none)")
    p.add_argument("--top", type=int, default=5, help="cells listed (most excess over the 95th percentile first)")


def error_field_from_run(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(inputs, |model − reference|, names) of a finished run's newest good checkpoint."""
    import torch
    import yaml

    from scidl.cli import UserError
    from scidl.config import RunConfig
    from scidl.train.checkpoint import latest_good_checkpoint, model_state
    from scidl.workloads import BuildContext, get_workload

    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run} has no config.yaml (not a run folder)")
    cfg = RunConfig.model_validate(yaml.safe_load((run / "config.yaml").read_text()))
    good = latest_good_checkpoint(run / "checkpoints")
    if good is None:
        raise UserError(f"{run} has no good checkpoint")
    task = get_workload(cfg.workload).build(cfg.task_config(), BuildContext(seed=cfg.train.seed))
    val = task.val_data
    if not (isinstance(val, Mapping) and "xt" in val and "u" in val):
        raise UserError(f"workload {cfg.workload!r} has no reference grid (val_data xt/u)")
    state = model_state(good)
    if state is None:
        raise UserError(f"{good.path} holds no model state")
    task.model.load_state_dict(state)
    task.model.eval()
    with torch.no_grad():
        err = (task.model(val["xt"]).reshape(-1).double() - val["u"].double()).abs()
    names = ["x", "t"] if val["xt"].shape[1] == 2 else []
    return val["xt"].numpy(), err.numpy(), names


def run(args: argparse.Namespace) -> int:
    from scidl.analysis.topology import describe_cell, morse_smale, plot_morse_smale
    from scidl.cli import UserError

    if args.input:
        data = np.load(args.input)
        if "X" not in data or "f" not in data:
            raise UserError(f"{args.input} must hold arrays 'X' and 'f'")
        X, f = data["X"], data["f"]
        names = [str(n) for n in data["names"]] if "names" in data else []
    else:
        X, f, names = error_field_from_run(args.run)
    if args.names:
        names = args.names.split(",")
    X = X[:, None] if X.ndim == 1 else X
    if len(X) > args.max_samples:
        keep = np.random.default_rng(0).choice(len(X), args.max_samples, replace=False)
        X, f = X[keep], f[keep]
    names = names or [f"x{i}" for i in range(X.shape[1])]
    pers: Any = None if args.persistence == "auto" else float(args.persistence)
    ms = morse_smale(X, f, k=args.k, graph=args.graph, persistence=pers)
    print(f"{len(X)} samples, {len(ms.edges)} edges, {len(ms.maxima)} maxima, "
          f"{len(ms.minima)} minima, {len(ms.cells)} cells")
    for c in sorted(ms.cells, key=lambda c: (-c.excess, -c.mean))[: args.top]:
        print(f"  cell {c.cell:3d}: {describe_cell(c, names)}")
    print(f"worst region: {describe_cell(ms.worst(), names)}")
    if args.plot:
        plot_morse_smale(X, f, ms, args.plot, names=names[:2] if len(names) > 1 else (names[0], "f"),
                         scalar="f" if args.input else "|error|")
        print(f"plot: {args.plot}")
    if args.json_out:
        rows = [c.__dict__ for c in ms.cells]
        atomic_write_text(Path(args.json_out), json.dumps({"names": names, "cells": rows}, indent=2))
    return 0
