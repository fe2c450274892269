"""Bytes per rank of the sparse collectives at 2, 4 and 8 gloo ranks.

Each rank computes the gradient of a small MLP (≈ 0.4 M parameters, one DDP-sized
bucket) on its own batch of a shared classification task — real gradients, whose top-k
selections overlap across ranks — and the bucket is reduced by ``topk`` with
``sparse_collective`` = ``allgather``, ``rsag``, ``oktopk`` and ``dense`` (and ``auto``
for a 1 Gbit/s link), at densities 1 % and 0.1 %. Also a worst case: independent random
gradients (no overlap). Reported per rank and step: bytes sent as counted by the
strategy, the bytes its wire description predicts for the fill it observed
(:func:`scidl.comm.sparse_allreduce.plan_for`), the fill U/(p·k), and the branch ``auto``
took; for ``oktopk`` also the entries its re-sparsified sum kept and the share of the
squared norm of the exact sum (rsag's result) they hold, relative to the same number of
entries chosen as the exact global top of that sum. Bytes are exact whatever the load
(the seconds in the JSON are not a measurement to quote). Writes
``benchmarks/results/sparse_collectives.json``.

    python benchmarks/sparse_collectives.py [--ranks 2 4 8] [--densities 0.01 0.001]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "sparse_collectives.json"
COLLECTIVES = ("allgather", "rsag", "oktopk", "dense", "auto")
MODE_ALGO = {"sparse": "allgather", "rsag_dense": "rsag", "oktopk_dense": "oktopk"}


def _gradient(rank: int, kind: str) -> tuple[Any, list[Any]]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 128),
                        nn.ReLU(), nn.Linear(128, 10))
    params = list(net.parameters())
    if kind == "independent":
        g = torch.Generator().manual_seed(100 + rank)
        flat = torch.randn(sum(p.numel() for p in params), generator=g)
        return flat, params
    gen = torch.Generator().manual_seed(7)
    centers = torch.randn(10, 256, generator=gen)
    gr = torch.Generator().manual_seed(1000 + rank)
    y = torch.randint(0, 10, (64,), generator=gr)
    x = centers[y] + 0.5 * torch.randn(64, 256, generator=gr)
    nn.functional.cross_entropy(net(x), y).backward()
    return torch.cat([p.grad.reshape(-1) for p in params]), params


def _worker(rank: int, world: int, densities: list[float]) -> list[dict[str, Any]]:
    import torch

    from scidl.comm import CommConfig, build_strategy
    from scidl.comm.buckets import Bucket, layout_of
    from scidl.comm.sparse import segments_k
    from scidl.comm.sparse_allreduce import plan_for
    from scidl.comm.wire import bytes_sent

    torch.set_num_threads(1)
    rows = []
    for kind in ("mlp", "independent"):
        flat, params = _gradient(rank, kind)
        n = flat.numel()
        for d in densities:
            k = segments_k([(0, p.numel()) for p in params], d)
            exact = None  # rsag's result: the exact sum of the selections
            for coll in COLLECTIVES:
                sc = "allgather" if coll == "dense" else coll
                cfg = CommConfig(strategy="topk", density=1.0 if coll == "dense" else d,
                                 selection="exact", sparse_collective=sc)
                s = build_strategy(cfg)
                s.setup(None, None)
                t0 = time.perf_counter()
                out = s.reduce(Bucket(flat.clone(), 0, True, params,
                                      layout_of(params, n))).wait()
                dt = time.perf_counter() - t0
                if coll == "rsag":
                    exact = out.clone()
                acct = s.end_step()
                mode = s.modes[0]
                fill = s.fill.get(0)
                algo = MODE_ALGO.get(mode, mode)
                wire = bytes_sent(plan_for(algo, world, n, k, 4, fill or 1.0), world, "gloo")
                row = {"gradients": kind, "density": d, "collective": coll,
                       "mode": mode, "bytes_sent": acct["bytes_sent"],
                       "wire_bytes": wire, "fill": fill, "n": n, "k": k, "seconds": dt}
                if coll == "oktopk" and exact is not None:
                    sizes = [p.numel() for p in params]
                    row.update(kept=int((out != 0).sum()), exact_nnz=int((exact != 0).sum()),
                               captured=captured_share(out, exact),
                               captured_per_parameter=captured_share(out, exact, sizes))
                rows.append(row)
    return rows


def captured_share(kept: Any, exact: Any, sizes: list[int] | None = None) -> float:
    """‖kept‖² ÷ ‖the same number of largest entries of ``exact``‖² (with ``sizes``: as
    many as ``kept`` has in each parameter, the largest of that parameter): 1 when the
    re-sparsified sum kept exactly the top of the exact sum."""
    import torch

    best, start = 0.0, 0
    for n in sizes or [exact.numel()]:
        m = int((kept[start : start + n] != 0).sum())
        if m:
            seg = exact[start : start + n].abs().double()
            best += float(torch.topk(seg, m).values.pow(2).sum())
        start += n
    return float(kept.double().pow(2).sum()) / best if best else 1.0


def measure(ranks: list[int], densities: list[float]) -> dict[str, Any]:
    from scidl.runtime.launch import run_distributed

    out: dict[str, Any] = {"ranks": ranks, "densities": densities, "rows": [],
                           "link": {"alpha": 5e-5, "beta": 8e-9},
                           "host": platform.node(), "date": time.strftime("%Y-%m-%d"),
                           "loadavg_start": list(os.getloadavg())}
    for p in ranks:
        per_rank = run_distributed(_worker, p, densities, timeout=900)
        for i, row in enumerate(per_rank[0]):
            # bytes differ per rank by the chunk each rank owns: report the mean and max
            sent = [r[i]["bytes_sent"] for r in per_rank]
            out["rows"].append({**row, "ranks": p, "bytes_sent": sum(sent) / p,
                                "bytes_sent_max": max(sent),
                                "wire_bytes": sum(r[i]["wire_bytes"] for r in per_rank) / p})
        print(f"{p} ranks done", flush=True)
    out["loadavg_end"] = list(os.getloadavg())
    return out


def markdown(data: dict[str, Any]) -> str:
    """The docs table: bytes sent per rank and step for each collective, ranks, density."""
    rows = data["rows"]
    head = ("| gradients | density | ranks | all-gather | rsag | rsag ÷ all-gather "
            "| oktopk | oktopk ÷ all-gather | oktopk wire description | kept ÷ k "
            "| norm² kept ÷ top per parameter | ÷ top of bucket | fill U/(p·k) | dense "
            "| auto (1 Gbit/s) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    out = [head]
    keys = sorted({(r["gradients"], r["density"], r["ranks"]) for r in rows},
                  key=lambda t: (t[0] != "mlp", -t[1], t[2]))
    names = {"sparse": "all-gather", "rsag_dense": "rsag", "oktopk_dense": "oktopk"}
    for g, d, p in keys:
        by = {r["collective"]: r for r in rows
              if (r["gradients"], r["density"], r["ranks"]) == (g, d, p)}
        ag, rs, ok = by["allgather"], by["rsag"], by["oktopk"]
        dn, au = by["dense"], by["auto"]
        out.append(
            f"| {'MLP (real)' if g == 'mlp' else 'independent'} | {d:.1%} | {p} "
            f"| {ag['bytes_sent']:,.0f} | {rs['bytes_sent']:,.0f} "
            f"| {rs['bytes_sent'] / ag['bytes_sent']:.2f} | {ok['bytes_sent']:,.0f} "
            f"| {ok['bytes_sent'] / ag['bytes_sent']:.2f} | {ok['wire_bytes']:,.0f} "
            f"| {ok['kept'] / ok['k']:.2f} | {ok['captured_per_parameter']:.3f} "
            f"| {ok['captured']:.3f} "
            f"| {rs['fill']:.3f} | {dn['bytes_sent']:,.0f} "
            f"| {names.get(au['mode'], au['mode'])} |")
    n = rows[0]["n"]
    out.append(f"\n{n:,} fp32 entries in one bucket (a 3-layer MLP), per-parameter top-k, "
               f"bytes sent per rank in one step (mean over ranks) as counted by the "
               f"strategy; kept ÷ k: entries of oktopk's sum over one rank's k; norm² kept "
               f"÷ top: the squared norm those entries hold over that of as many largest "
               f"entries of the exact sum (rsag's), per parameter or over the whole "
               f"bucket; gloo on one host, {data['date']}. "
               f"`python benchmarks/sparse_collectives.py`.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--densities", type=float, nargs="+", default=[0.01, 0.001])
    args = ap.parse_args(argv)
    data = measure(args.ranks, args.densities)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")
    for r in data["rows"]:
        print(f"{r['gradients']:11s} p={r['ranks']} d={r['density']:<6} {r['collective']:9s} "
              f"{r['mode']:10s} {r['bytes_sent']:12,.0f} wire {r['wire_bytes']:12,.0f} "
              f"fill {r['fill'] if r['fill'] is not None else float('nan'):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
