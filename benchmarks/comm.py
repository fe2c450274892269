"""Gradient communication strategies: step time, bytes on the wire, convergence.

``speed``: a communication-bound MLP (≥ 20 M parameters, small batch) on 2 gloo
processes. Every strategy — plus torch's own fp16 hook and its PowerSGD hook with one
bucket (its multi-bucket form fails on gloo) as peer baselines, and a compute-only floor
(the same step without DDP) — is measured in interleaved repeats (A, B, C, …, A, B, C,
…), so machine noise hits all alike. Reported: median step time (slowest rank) and bytes
sent per step per rank, each as a ratio to ``dense``.

``convergence``: each strategy trains ``digits`` and ``admissions`` through
``scidl.run`` on 2 processes with the same budget, once per seed (``--seeds``); the
final headline metric is compared with ``dense`` of the same seed. ``--budget-scale``
multiplies every workload's epochs (3: the longer budget, 330 steps on ``digits``).
A section is resumable: runs already in it with the same settings are skipped.

Both write their section of ``benchmarks/results/comm.json`` and print a table.

    python benchmarks/comm.py speed [--repeats 5] [--steps 3] [--width 4096]
    python benchmarks/comm.py table          # markdown tables of comm.json
    python benchmarks/comm.py convergence [--workloads digits admissions] [--cases dense ...]
        [--seeds 0 1 2] [--budget-scale 3] [--set optim.name=sgd optim.lr=0.05]
        [--section convergence_sgd]
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
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from scidl.comm import CommConfig, build_strategy
from scidl.comm.accounting import ring_allreduce_bytes
from scidl.runtime.launch import run_distributed

RESULTS = Path(__file__).parent / "results" / "comm.json"

# (label, comm overrides); "torch_*" are torch's own hooks, "compute_only" has no DDP.
SPEED_CASES: list[tuple[str, dict[str, Any]]] = [
    ("dense", {"strategy": "dense"}),
    ("compute_only", {}),
    ("grouped", {"strategy": "grouped"}),
    ("hierarchical", {"strategy": "hierarchical", "ranks_per_node": 2}),
    ("fp16", {"strategy": "fp16"}),
    ("bf16", {"strategy": "bf16"}),
    ("powersgd_r4", {"strategy": "powersgd", "rank": 4}),
    ("topk_1%", {"strategy": "topk", "density": 0.01}),
    ("topk_1%_fp16", {"strategy": "topk", "density": 0.01, "value_dtype": "fp16"}),
    ("topk_0.1%", {"strategy": "topk", "density": 0.001}),
    ("lag_dense", {"strategy": "lag", "lag_inner": "dense"}),
    ("torch_fp16_hook", {}),
    ("torch_powersgd_r4_1bucket", {}),
]

CONV_CASES: list[tuple[str, dict[str, Any]]] = [
    ("dense", {"strategy": "dense"}),
    ("grouped", {"strategy": "grouped"}),
    ("hierarchical", {"strategy": "hierarchical", "ranks_per_node": 2}),
    ("fp16", {"strategy": "fp16"}),
    ("bf16", {"strategy": "bf16"}),
    ("powersgd_r4", {"strategy": "powersgd", "rank": 4}),
    ("topk_1%_ef", {"strategy": "topk", "density": 0.01}),
    ("topk_1%_no_ef", {"strategy": "topk", "density": 0.01, "error_feedback": False}),
    ("lag_dense", {"strategy": "lag", "lag_inner": "dense"}),
    ("auto", {"strategy": "auto"}),
]

# Same budget for every strategy of a workload (epochs; × --budget-scale).
CONV_EPOCHS = {"digits": 10, "admissions": 60}


def conv_cases(names: list[str] | None) -> list[tuple[str, dict[str, Any]]]:
    """The CONV_CASES labels asked for; a registered strategy name that is no label (a
    strategy added since) runs with its defaults."""
    from scidl.comm import strategy_names

    if not names:
        return list(CONV_CASES)
    known = dict(CONV_CASES)
    out = []
    for name in names:
        if name in known:
            out.append((name, known[name]))
        elif name in strategy_names():
            out.append((name, {"strategy": name}))
        else:
            raise SystemExit(f"unknown case {name!r}: a label of CONV_CASES or a strategy name")
    return out


# ----------------------------------------------------------------------------- speed


def _mlp(d_in: int, width: int, d_out: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, d_out))


def _torch_powersgd_bytes(model: nn.Module, rank: int, world: int) -> int:
    """Bytes/step of torch's PowerSGD hook, from its algorithm (min_compression_rate=2)."""
    plain = p_n = q_n = 0
    for p in model.parameters():
        if p.dim() >= 2:
            rows, cols = p.shape[0], p.numel() // p.shape[0]
            if rows * cols >= 2 * (rows + cols) * rank:
                p_n += rows * rank
                q_n += cols * rank
                continue
        plain += p.numel()
    return sum(ring_allreduce_bytes(n * 4, world) for n in (plain + p_n, q_n))


def _wrap(label: str, over: dict[str, Any], model: nn.Module, cap_mb: float):
    """A DDP model with the case's hook, and a bytes-per-step function."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd

    world = dist.get_world_size()
    n = sum(p.numel() for p in model.parameters())
    if label == "torch_fp16_hook":
        ddp = DDP(model, bucket_cap_mb=cap_mb)
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
        return ddp, None, lambda: ring_allreduce_bytes(n * 2, world)
    if label.startswith("torch_powersgd"):
        ddp = DDP(model, bucket_cap_mb=4096)  # one bucket: the only form that runs on gloo
        state = psgd.PowerSGDState(process_group=None, matrix_approximation_rank=4,
                                   start_powerSGD_iter=2)
        ddp.register_comm_hook(state, psgd.powerSGD_hook)
        return ddp, None, lambda: _torch_powersgd_bytes(model, 4, world)
    strat = build_strategy(CommConfig(bucket_cap_mb=cap_mb, **over))
    ddp = DDP(model, **strat.ddp_kwargs())
    strat.install(ddp, None)
    return ddp, strat, None


def _step(net: nn.Module, opt: torch.optim.Optimizer, strat: Any, x: torch.Tensor,
          y: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    nn.functional.mse_loss(net(x), y).backward()
    opt.step()
    if strat is not None:
        strat.end_step()


def _speed_worker(rank: int, world: int, args: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(rank)
    d_in, width, batch = args["d_in"], args["width"], args["batch"]
    x = torch.randn(batch, d_in)
    y = torch.randn(batch, d_in)
    times: dict[str, list[float]] = {label: [] for label, _ in SPEED_CASES}
    nbytes: dict[str, float] = {}
    exposed: dict[str, list[float]] = {label: [] for label, _ in SPEED_CASES}
    for _rep in range(args["repeats"]):
        for label, over in SPEED_CASES:
            model = _mlp(d_in, width, d_in)
            if label == "compute_only":
                net, strat, fn = model, None, (lambda: 0)
            else:
                net, strat, fn = _wrap(label, over, model, args["cap_mb"])
            opt = torch.optim.SGD(model.parameters(), lr=1e-4)
            for _ in range(args["warmup"]):
                _step(net, opt, strat, x, y)
            dist.barrier()
            before = strat.counters.bytes_sent if strat else 0
            ex_before = strat.counters.exposed if strat else 0.0
            t0 = time.perf_counter()
            for _ in range(args["steps"]):
                _step(net, opt, strat, x, y)
            dt = torch.tensor([(time.perf_counter() - t0) / args["steps"]])
            dist.all_reduce(dt, op=dist.ReduceOp.MAX)
            times[label].append(float(dt))
            if strat is not None:
                nbytes[label] = (strat.counters.bytes_sent - before) / args["steps"]
                exposed[label].append((strat.counters.exposed - ex_before) / args["steps"])
            else:
                nbytes[label] = float(fn())
            del net, model, opt, strat
    n_params = sum(p.numel() for p in _mlp(d_in, width, d_in).parameters())
    return {"times": times, "bytes": nbytes, "exposed": exposed, "params": n_params}


def speed(args: argparse.Namespace) -> dict[str, Any]:
    cfg = {"d_in": args.d_in, "width": args.width, "batch": args.batch, "repeats": args.repeats,
           "steps": args.steps, "warmup": 3, "cap_mb": 25.0}
    t0 = time.time()
    res = run_distributed(_speed_worker, args.nproc, cfg, timeout=args.timeout)[0]
    med = {k: statistics.median(v) for k, v in res["times"].items()}
    rows = []
    for label, _ in SPEED_CASES:
        ex = res["exposed"][label]
        rows.append({
            "case": label,
            "step_s": med[label],
            "step_vs_dense": med[label] / med["dense"],
            "bytes_per_step": res["bytes"][label],
            "bytes_vs_dense": (res["bytes"][label] / res["bytes"]["dense"]
                               if res["bytes"][label] else 0.0),
            "bytes_reduction": (res["bytes"]["dense"] / res["bytes"][label]
                                if res["bytes"][label] else None),
            "exposed_s": statistics.median(ex) if ex else None,
            "all_step_s": res["times"][label],
        })
    print(f"\n{res['params'] / 1e6:.1f} M parameters, {args.nproc} processes, batch "
          f"{args.batch}/rank, {args.repeats} interleaved repeats × {args.steps} steps "
          f"({time.time() - t0:.0f} s)")
    print(f"{'case':28s} {'step s':>8s} {'× dense':>8s} {'MB/step':>9s} {'bytes ÷':>8s}")
    for r in rows:
        red = f"{r['bytes_reduction']:.1f}" if r["bytes_reduction"] else "-"
        print(f"{r['case']:28s} {r['step_s']:8.3f} {r['step_vs_dense']:8.2f} "
              f"{r['bytes_per_step'] / 1e6:9.2f} {red:>8s}")
    return {"config": {**cfg, "nproc": args.nproc, "params": res["params"]}, "rows": rows,
            "wall_s": time.time() - t0}


# ----------------------------------------------------------------------------- convergence


def convergence(args: argparse.Namespace) -> dict[str, Any]:
    import scidl
    from scidl.config import load_config

    cases = conv_cases(args.cases)
    epochs = {wl: max(1, round(e * args.budget_scale)) for wl, e in CONV_EPOCHS.items()}
    budget = {wl: [f"train.epochs={e}"] for wl, e in epochs.items()}
    out: dict[str, Any] = {"budget": budget, "nproc": args.nproc, "set": args.set, "rows": []}
    old = json.loads(RESULTS.read_text()).get(args.section) if RESULTS.exists() else None
    if old and old.get("nproc") == args.nproc and old.get("set") == args.set:
        # resume: keep the finished runs of the same settings and budget
        out["rows"] = [r for r in old["rows"] if r.get("epochs") == epochs.get(r["workload"])]
    root = Path(args.runs or tempfile.mkdtemp(prefix="scidl-comm-conv-"))
    for wl in args.workloads:
        for seed in args.seeds:
            base = next((r for r in out["rows"] if r["workload"] == wl and r["case"] == "dense"
                         and r.get("seed", 0) == seed and r.get("epochs") == epochs.get(wl)),
                        None)
            for label, over in cases:
                if any(r["workload"] == wl and r["case"] == label and r.get("seed", 0) == seed
                       and r.get("epochs") == epochs.get(wl) for r in out["rows"]):
                    continue
                overrides = [
                    f"dist.nproc={args.nproc}", f"log.root={root}", "log.tensorboard=false",
                    "log.progress=false", *budget.get(wl, []), f"train.seed={seed}", *args.set,
                    *(f"comm.{k}={v}" for k, v in over.items()),
                ]
                t0 = time.time()
                res = scidl.run(load_config(wl, overrides=overrides))
                s = res.summary
                comm = s.get("comm") or {}
                row = {
                    "workload": wl, "case": label, "seed": seed, "epochs": epochs.get(wl),
                    "headline": s["headline"], "value": s.get("headline_value"),
                    "steps": s.get("steps"), "bytes_per_step": comm.get("bytes_sent_per_step"),
                    "wall_s": time.time() - t0, "run_dir": str(res.run_dir),
                    "overrides": overrides[4:],
                }
                if label == "dense":
                    base = row
                if base is not None and base["value"] and row["value"] is not None:
                    row["vs_dense"] = row["value"] / base["value"]
                out["rows"].append(row)
                print(f"{wl:11s} seed {seed} {label:16s} {row['headline']}={row['value']:.4f} "
                      f"vs dense {row.get('vs_dense', float('nan')):.3f} "
                      f"bytes/step {row['bytes_per_step'] or 0:,.0f} ({row['wall_s']:.0f} s)",
                      flush=True)
                _save(args.section, out)
    return out


# ----------------------------------------------------------------------------- tables


def markdown() -> str:
    """The tables of docs/communication.md from ``comm.json`` (scripts/doc_tables.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import doc_tables

    data = json.loads(RESULTS.read_text())
    out = [doc_tables.comm_convergence(data, k) for k in sorted(data)
           if k.startswith("convergence")]
    if "speed" in data:
        out.append(doc_tables.comm_speed(data, "speed"))
    return "\n\n".join(out)


# ----------------------------------------------------------------------------- main


def _save(section: str, data: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    old[section] = data
    old["env"] = {"torch": torch.__version__, "python": platform.python_version(),
                  "machine": platform.machine(), "cpus": torch.get_num_threads(),
                  "platform": platform.platform()}
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(old, indent=2) + "\n")
    tmp.replace(RESULTS)  # atomic: concurrent sections never see a half-written file


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("speed", help="step time and bytes per strategy (2 processes)")
    sp.add_argument("--nproc", type=int, default=2)
    sp.add_argument("--d-in", type=int, default=1024)
    sp.add_argument("--width", type=int, default=4096)
    sp.add_argument("--batch", type=int, default=8)
    sp.add_argument("--repeats", type=int, default=5)
    sp.add_argument("--steps", type=int, default=3)
    sp.add_argument("--timeout", type=float, default=900)
    cp = sub.add_parser("convergence", help="final metric per strategy vs dense")
    cp.add_argument("--nproc", type=int, default=2)
    cp.add_argument("--workloads", nargs="+", default=["digits", "admissions"])
    cp.add_argument("--runs", help="parent folder of the run folders (default: a temp dir)")
    cp.add_argument("--cases", nargs="*",
                    help="only these cases (labels of CONV_CASES, or strategy names)")
    cp.add_argument("--seeds", nargs="+", type=int, default=[0], help="train.seed of each run")
    cp.add_argument("--budget-scale", type=float, default=1.0,
                    help="multiply every workload's epochs (3: the longer budget)")
    cp.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="overrides for every run (e.g. optim.name=sgd optim.lr=0.05)")
    cp.add_argument("--section", default="convergence", help="section of comm.json")
    sub.add_parser("table", help="print the results in comm.json as markdown tables")
    args = ap.parse_args(argv)
    if args.cmd == "table":
        print(markdown())
        return 0
    if args.cmd == "speed":
        _save("speed", speed(args))
    else:
        convergence(args)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
