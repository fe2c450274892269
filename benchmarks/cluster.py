"""Communication strategies on a virtual cluster: step time and exposed communication
of the comm benchmark model over shaped links.

The model is ``benchmarks/comm.py``'s communication-bound MLP (1024 → 4096 → 4096 →
1024, 25.2 M parameters, 101 MB of fp32 gradients, batch 8 per rank). For each link rate
a cluster of 4 virtual nodes × 1 rank is built (``scidl.cluster.net``), one node
launcher per node is started inside its namespace (``scidl.cluster.launch.supervise``,
the path of ``scidl train --cluster``), and every rank trains the model a few steps
with each communication strategy through the strategy objects the trainer installs
(``build_strategy(...).wrap(model)``, forward, backward, SGD step, ``end_step()``),
in interleaved repeats whose order rotates, so machine noise hits every strategy alike.
``compute_only`` is the same step without DDP on every rank at once (communication
skipped; the CPU is shared as in the other cases): the floor.

A second part runs 2 nodes × 2 ranks over a slow node link: flat ``dense`` (one ring
over all 4 ranks) against ``hierarchical`` (node boundary from ``LOCAL_WORLD_SIZE``;
the two ranks of a node talk over the node's loopback, unshaped).

Every cluster gets a unique name and is removed again, also when a run fails.

    python benchmarks/cluster.py [--quick] [--links 100mbit 1gbit 10gbit] [--repeats 2]
    python benchmarks/cluster.py table      # the markdown of the docs from cluster.json

Needs root, ``ip`` and ``tc`` (see docs/cluster.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "cluster.json"

# (label, comm overrides); compute_only: no DDP, no communication.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("dense", {"strategy": "dense", "timing": True}),
    ("grouped", {"strategy": "grouped"}),
    ("hierarchical", {"strategy": "hierarchical"}),
    ("fp16", {"strategy": "fp16"}),
    ("bf16", {"strategy": "bf16"}),
    ("powersgd", {"strategy": "powersgd", "rank": 4}),
    ("topk", {"strategy": "topk", "density": 0.01}),
    ("lag", {"strategy": "lag", "lag_inner": "dense", "timing": True}),
    ("compute_only", {}),
]
HIER_CASES = ["dense", "hierarchical", "compute_only"]
LINKS = ["100mbit", "1gbit", "10gbit"]
# (warm-up, timed) steps per case and repeat: a 100 Mbit/s dense step takes ~13 s.
STEPS = {"100mbit": (1, 1), "1gbit": (1, 2), "10gbit": (1, 2)}
MODEL = {"d_in": 1024, "width": 4096, "batch": 8}
QUICK_MODEL = {"d_in": 256, "width": 1024, "batch": 8}


# ----------------------------------------------------------------------------- one rank


def _mlp(d_in: int, width: int) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)  # the same weights on every rank: DDP needs no initial broadcast
    return nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, d_in))


def _case_steps(label: str, over: dict[str, Any], job: dict[str, Any], x: Any, y: Any) -> dict:
    """Warm-up then timed steps of one case on this rank: per timed step its seconds,
    exposed and total communication seconds and bytes sent (the trainer's row fields)."""
    import torch
    import torch.distributed as dist
    from torch import nn

    from scidl.comm import CommConfig, build_strategy

    model = _mlp(job["model"]["d_in"], job["model"]["width"])
    strat = None
    net = model
    if label != "compute_only":
        strat = build_strategy(CommConfig(**over))
        net = strat.wrap(model, init_sync=False)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    warm, timed = job["steps"]
    out: dict[str, list[float | None]] = {"step_s": [], "exposed_s": [], "comm_s": [], "bytes": []}
    dist.barrier()
    for i in range(warm + timed):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        row = strat.end_step() if strat is not None else {}
        dt = time.perf_counter() - t0
        if i >= warm:
            out["step_s"].append(dt)
            out["exposed_s"].append(row.get("exposed_s"))
            out["comm_s"].append(row.get("comm_s"))
            out["bytes"].append(row.get("bytes_sent"))
    if strat is not None:
        strat.drain()
    dist.barrier()
    return out


def rotated(items: list[Any], k: int) -> list[Any]:
    """``items`` rotated left by ``k`` (the order of repeat ``k``)."""
    k %= len(items)
    return items[k:] + items[:k]


def bench_worker(job: dict[str, Any]) -> None:
    """One rank: every case in rotating order, ``repeats`` times; rank 0 writes the
    per-step maxima over ranks to ``job['out']``."""
    import torch
    import torch.distributed as dist

    from scidl.runtime.dist import distributed_context

    torch.set_num_threads(1)  # dist.threads_per_proc=1
    cases = [(c, o) for c, o in CASES if c in job["cases"]]
    with distributed_context("cpu", "gloo", job["dist_timeout_s"]):
        g = torch.Generator().manual_seed(dist.get_rank())
        m = job["model"]
        x = torch.randn(m["batch"], m["d_in"], generator=g)
        y = torch.randn(m["batch"], m["d_in"], generator=g)
        mine: dict[str, dict[str, list]] = {c: {} for c, _ in cases}
        for rep in range(job["repeats"]):
            for label, over in rotated(cases, rep):
                got = _case_steps(label, over, job, x, y)
                for k, v in got.items():
                    mine[label].setdefault(k, []).extend(v)
        every: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(every, mine)
        if dist.get_rank() == 0:
            Path(job["out"]).write_text(json.dumps(combine(every)))


def _max(values: list[float | None]) -> float | None:
    have = [v for v in values if v is not None]
    return max(have) if have else None


def combine(per_rank: list[dict[str, dict[str, list]]]) -> dict[str, dict[str, list]]:
    """Per case and timed step: the slowest rank's step time, exposed and total
    communication; rank 0's bytes sent."""
    out: dict[str, dict[str, list]] = {}
    for case, first in per_rank[0].items():
        out[case] = {k: [_max([r[case][k][i] for r in per_rank]) for i in range(len(v))]
                     for k, v in first.items() if k != "bytes"}
        out[case]["bytes"] = first["bytes"]
    return out


# ----------------------------------------------------------------------------- node launcher


def node_main(argv: list[str]) -> None:
    """``python -m cluster node JOB NNODES NODE_RANK ENDPOINT RDZV_ID LOCAL_ADDR K``:
    one node's torch elastic agent with K ranks of the benchmark."""
    from scidl.runtime.launch import elastic_run, node_spec

    job_file, nnodes, node_rank, endpoint, rdzv_id, addr, k = argv
    job = json.loads(Path(job_file).read_text())
    nodes = node_spec(int(nnodes), int(node_rank), endpoint, rdzv_id, addr, nproc=int(k))
    elastic_run(bench_worker, (job,), int(k), 0, nodes)


# ----------------------------------------------------------------------------- parent


def run_on_cluster(name: str, nodes: int, link: str, ranks_per_node: int, job: dict[str, Any],
                   timeout_s: float) -> dict[str, Any]:
    """Build a cluster, run ``job`` on it (one launcher per node), tear it down (always)."""
    from scidl.cluster import net
    from scidl.cluster.launch import supervise
    from scidl.cluster.spec import ClusterSpec, parse_rate
    from scidl.runtime.ports import free_port

    spec = ClusterSpec(name=name, nodes=nodes, link_bits=parse_rate(link))
    tmp = Path(tempfile.mkdtemp(prefix=f"scidl-cbench-{name}-"))
    job = {**job, "out": str(tmp / "result.json")}
    (tmp / "job.json").write_text(json.dumps(job))
    t0 = time.time()
    try:
        net.up(spec)
        port = free_port()
        argvs = [["node", str(tmp / "job.json"), str(nodes), str(i), f"{spec.address(0)}:{port}",
                  f"cbench-{name}-{port}", spec.address(i), str(ranks_per_node)]
                 for i in range(nodes)]
        code = supervise(spec, argvs, timeout_s, tmp, 0, module="cluster")
        if code != 0:
            raise RuntimeError(f"the benchmark on {nodes} nodes at {link} failed (exit status "
                               f"{code}); node logs in {tmp}")
        steps = json.loads((tmp / "result.json").read_text())
        shutil.rmtree(tmp, ignore_errors=True)  # kept (with the node logs) when it failed
    finally:
        net.down(name)
    return {"link": link, "nodes": nodes, "ranks_per_node": ranks_per_node,
            "steps": job["steps"], "repeats": job["repeats"], "rows": summarize(steps),
            "wall_s": time.time() - t0}


def _median(values: list[float | None]) -> float | None:
    have = [v for v in values if v is not None]
    return statistics.median(have) if have else None


def summarize(steps: dict[str, dict[str, list]]) -> list[dict[str, Any]]:
    """One row per case: medians over the timed steps of every repeat."""
    return [{"case": case, "step_s": _median(s["step_s"]), "exposed_s": _median(s["exposed_s"]),
             "comm_s": _median(s["comm_s"]), "bytes_per_step": _median(s["bytes"]),
             "all_step_s": s["step_s"]} for case, s in steps.items()]


def _versions() -> dict[str, str]:
    import torch

    from scidl import __version__

    return {"scidl": __version__, "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from scidl.cluster.net import missing_requirements

    why = missing_requirements()
    if why:
        raise SystemExit(f"benchmarks/cluster.py: {why}")
    # SIGTERM (a timeout, a kill) unwinds like Ctrl-C, so the `finally` removes the cluster
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # the node launchers run `python -m cluster` (this file) with scidl importable
    src = str(HERE.parent / "src")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), src, os.environ.get("PYTHONPATH", "")) if p)
    model = QUICK_MODEL if args.quick else MODEL
    n_params = sum(p.numel() for p in _mlp(model["d_in"], model["width"]).parameters())
    base = {"model": model, "repeats": args.repeats, "dist_timeout_s": args.timeout}
    name = "cb" + uuid.uuid4().hex[:6]
    load_before = os.getloadavg()
    t0 = time.time()
    flat = []
    for link in args.links:
        steps = (1, 1) if args.quick else STEPS.get(link, (1, 2))
        job = {**base, "steps": steps, "cases": [c for c, _ in CASES]}
        flat.append(run_on_cluster(name, 4, link, 1, job, args.timeout))
        print(table_flat([flat[-1]]), flush=True)
    hier_steps = (1, 1) if args.quick else (1, 2)
    hier = run_on_cluster(name, 2, args.hier_link, 2,
                          {**base, "steps": hier_steps, "cases": HIER_CASES}, args.timeout)
    print(table_hier(hier), flush=True)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python benchmarks/cluster.py", *sys.argv[1:]]),
        "versions": _versions(),
        "machine": {"cpus": os.cpu_count(), "machine": platform.machine()},
        "load_before": list(load_before), "load_after": list(os.getloadavg()),
        "config": {"model": model, "params": n_params, "threads_per_proc": 1,
                   "repeats": args.repeats, "quick": args.quick, "order": "rotated per repeat",
                   "floor": "compute_only: the same step without DDP on every rank at once "
                            "(communication skipped)"},
        "flat": flat, "hier": hier, "wall_s": time.time() - t0,
    }


# ----------------------------------------------------------------------------- tables


def _row(rows: list[dict[str, Any]], case: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["case"] == case), None)


def _s(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _spread(r: dict[str, Any] | None) -> str:
    """Median step and the range of the timed steps: ``2.03 [1.48–3.02]``."""
    if r is None or r["step_s"] is None:
        return "–"
    xs = r.get("all_step_s") or []
    return _s(r["step_s"]) + (f" [{min(xs):.2f}–{max(xs):.2f}]" if len(xs) > 1 else "")


def table_flat(flat: list[dict[str, Any]]) -> str:
    """Strategies down, links across: median step (s), × dense, exposed comm (s)."""
    head = ["strategy"]
    for part in flat:
        head += [f"{part['link']} step (s) [range]", "× dense", "exposed (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in [r["case"] for r in flat[0]["rows"]]:
        cells = [case]
        for part in flat:
            r, d = _row(part["rows"], case), _row(part["rows"], "dense")
            ratio = r["step_s"] / d["step_s"] if r and d and r["step_s"] and d["step_s"] else None
            cells += [_spread(r), _s(ratio), _s(r and r["exposed_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_hier(hier: dict[str, Any]) -> str:
    d = _row(hier["rows"], "dense")
    lines = ["| case | median step (s) | × dense | exposed comm (s/step) | MB sent/step/rank |",
             "|---|---|---|---|---|"]
    for r in hier["rows"]:
        ratio = r["step_s"] / d["step_s"] if d and d["step_s"] and r["step_s"] else None
        mb = None if r["bytes_per_step"] is None else r["bytes_per_step"] / 1e6
        lines.append(f"| {r['case']} | {_s(r['step_s'])} | {_s(ratio)} | "
                     f"{_s(r['exposed_s'])} | {_s(mb, 1)} |")
    return "\n".join(lines)


def render(d: dict[str, Any]) -> str:
    """The docs block: setup line, both tables and what the numbers say."""
    c = d["config"]
    m = c["model"]
    out = [f"{c['params'] / 1e6:.1f} M parameters (MLP {m['d_in']} → {m['width']} → "
           f"{m['width']} → {m['d_in']}, batch {m['batch']} per rank), "
           f"{c['repeats']} interleaved repeats in rotated order, 1 thread per rank; "
           f"run {d['date'][:10]} on {d['machine']['cpus']} cores with load average "
           f"{d['load_before'][0]:.1f} before and {d['load_after'][0]:.1f} after "
           f"(torch {d['versions']['torch']}; `{d['command']}`, {d['wall_s'] / 60:.0f} min).",
           "",
           "**4 nodes × 1 rank** (median step time, its ratio to `dense`, exposed "
           "communication per step; `compute_only` is the floor):", "",
           table_flat(d["flat"]), ""]
    for part in d["flat"]:
        dense = _row(part["rows"], "dense")
        floor = _row(part["rows"], "compute_only")
        rows = sorted((r for r in part["rows"] if r["case"] not in ("dense", "compute_only")
                       and r["step_s"]), key=lambda r: r["step_s"])

        def listed(rs: list[dict[str, Any]], dense: dict[str, Any] = dense) -> str:
            return ", ".join(f"`{r['case']}` {r['step_s'] / dense['step_s']:.2f}×"
                             for r in rs) or "none"

        out.append(f"- {part['link']}: `dense` {dense['step_s']:.2f} s per step, "
                   f"{_s(dense['exposed_s'])} s of it exposed communication, floor "
                   f"{floor['step_s']:.2f} s; faster than dense: "
                   f"{listed([r for r in rows if r['step_s'] < dense['step_s']])}; slower: "
                   f"{listed([r for r in rows if r['step_s'] >= dense['step_s']])}.")
    h = d["hier"]
    hd, hh = _row(h["rows"], "dense"), _row(h["rows"], "hierarchical")
    out += ["", f"**2 nodes × 2 ranks, {h['link']} node links** (flat ring vs hierarchical):",
            "", table_hier(h), "",
            f"- `hierarchical` takes {hh['step_s'] / hd['step_s']:.2f}× the flat ring's step "
            f"time ({hh['step_s']:.2f} s vs {hd['step_s']:.2f} s; exposed communication "
            f"{_s(hh['exposed_s'])} s vs {_s(hd['exposed_s'])} s)."]
    return "\n".join(out)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["node"]:
        node_main(argv[1:])
        return 0
    if argv[:1] == ["table"]:
        print(render(json.loads(RESULTS.read_text())))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: a 1.6 M-parameter model, 1 repeat, 1 warm + 1 timed step, "
                         "1gbit only; writes to a temp file unless --out is given")
    ap.add_argument("--links", nargs="+", default=None, help=f"link rates (default {LINKS})")
    ap.add_argument("--hier-link", default="100mbit", help="node link of the 2 × 2 part")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 2)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per cluster run")
    ap.add_argument("--out", type=Path, default=None, help=f"results file (default {RESULTS})")
    args = ap.parse_args(argv)
    args.links = args.links or (["1gbit"] if args.quick else LINKS)
    args.repeats = args.repeats or (1 if args.quick else 2)
    out = args.out or (Path(tempfile.mkdtemp()) / "cluster.json" if args.quick else RESULTS)
    data = run(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(render(data))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
