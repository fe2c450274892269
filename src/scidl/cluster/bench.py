"""``scidl bench-collectives --cluster NAME``: the collectives benchmark across the nodes.

One process per node, inside its namespace (``GLOO_SOCKET_IFNAME`` on the node's
interface), forms a gloo group at node 0's address and runs the same timing loop as the
one-machine benchmark (:func:`scidl.scaling.collectives.bench_worker`); rank 0 writes
the rows. The fitted α, β describe the node-to-node link and become the ``inter`` level
of a hardware profile that ``scidl predict --hardware FILE`` reads.

Node side: ``python -m scidl.cluster.bench RANK WORLD MASTER_ADDR PORT OUT SIZES OPS ITERS``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from scidl.cluster.spec import ClusterSpec, format_rate, tbf_burst_bytes

GROUP_TIMEOUT_S = 300


def node_main(argv: list[str]) -> None:
    """One node's rank: join the group, time the collectives, rank 0 writes the rows."""
    import torch

    from scidl.runtime.dist import distributed_context
    from scidl.runtime.env import LaunchEnv
    from scidl.scaling.collectives import bench_worker

    rank, world, addr, port, out = int(argv[0]), int(argv[1]), argv[2], int(argv[3]), argv[4]
    sizes = [int(x) for x in argv[5].split(",")]
    ops, iters = argv[6].split(","), int(argv[7])
    torch.set_num_threads(1)
    launch = LaunchEnv("torchrun", rank=rank, world_size=world, local_rank=0,
                       local_world_size=1, master_addr=addr, master_port=port)
    os.environ.update(launch.export())
    with distributed_context("cpu", "gloo", GROUP_TIMEOUT_S, launch=launch):
        rows = bench_worker(rank, world, sizes, ops, iters)
    if rank == 0:
        Path(out).write_text(json.dumps(rows))


def run_on_cluster(spec: ClusterSpec, sizes: list[int], ops: list[str], iters: int,
                   out: Path, timeout_s: float = 900.0) -> list[dict[str, Any]]:
    """Time ``ops`` at ``sizes`` with one rank per node of ``spec``; the rows (with
    ``algbw_Bps``/``busbw_Bps``). RuntimeError when a node fails or time runs out."""
    from scidl.cluster.launch import supervise
    from scidl.runtime.ports import free_port
    from scidl.scaling.collectives import busbw_factor

    rows_file = out / "cluster_rows.json"
    rows_file.unlink(missing_ok=True)
    port = free_port()
    argvs = [[str(i), str(spec.nodes), spec.address(0), str(port), str(rows_file),
              ",".join(map(str, sizes)), ",".join(ops), str(iters)] for i in range(spec.nodes)]
    logs = out / "nodes"
    logs.mkdir(parents=True, exist_ok=True)
    code = supervise(spec, argvs, timeout_s, logs, module="scidl.cluster.bench")
    if code != 0 or not rows_file.is_file():
        raise RuntimeError(f"the collectives benchmark on cluster {spec.name!r} failed "
                           f"(exit status {code}); node logs in {logs}")
    rows = json.loads(rows_file.read_text())
    for r in rows:
        r["algbw_Bps"] = r["bytes"] / r["time_s"]
        r["busbw_Bps"] = r["algbw_Bps"] * busbw_factor(r["op"], spec.nodes)
    return rows


def cluster_probe_counts(nodes: int) -> list[int]:
    """Busy-rank counts the compute probe measures on a virtual cluster of ``nodes``
    nodes: 2, 4, 8, ... and the node count itself."""
    counts, p = {nodes}, 2
    while p < nodes:
        counts.add(p)
        p *= 2
    return sorted(c for c in counts if c >= 2)


def cluster_hardware(spec: ClusterSpec, fit: dict[str, Any], device_flops: float,
                     slowdown: dict[int, float] | None = None) -> dict[str, Any]:
    """A hardware-profile dict for the virtual cluster: one rank per node, the fitted link
    as the ``inter`` level (and, unmeasured with one rank per node, as ``intra``).

    ``slowdown``: the measured compute slowdown of p busy ranks (p → factor). The
    virtual nodes share this machine's cores, so p ranks on p nodes time-share them as p
    processes on one node do; the cost model multiplies the compute at p by it."""
    level = {"alpha": fit["alpha"], "beta": fit["beta"], "gamma": fit["gamma"],
             "op_beta": dict(fit.get("op_beta", {})),
             "op_beta_ranks": fit.get("op_beta_ranks"),
             "op_latency": dict(fit.get("op_latency", {})),
             "burst_bytes": tbf_burst_bytes(spec.link_bits),
             "note": f"least-squares fit of {fit['n']} timings across {spec.nodes} nodes of "
                     f"virtual cluster {spec.name!r}, rel. rms error {fit['rel_rms']:.2f}"}
    return {
        "name": f"cluster-{spec.name}",
        "description": f"virtual cluster {spec.name!r}: {spec.describe()}; gloo on CPU, "
                       "one rank per node",
        "device": "CPU core (1 thread per rank)",
        "devices_per_node": 1,
        "sustained_flops": device_flops,
        "overlap": 0.0,
        "algorithm": "ring",
        "intra": {**level, "note": "not measured (one rank per node): the inter-node fit"},
        "inter": level,
        "compute_slowdown": dict(slowdown or {}),
        "measured_here": True,
        "sources": [f"scidl bench-collectives --cluster {spec.name}"],
        "assumptions": [
            f"each node's link is shaped to {format_rate(spec.link_bits)} with tbf in both "
            "directions; the fit's 1/beta is the bandwidth gloo reaches over it",
            "after the compute of a step the shaper's token bucket is full again: the "
            "first burst_bytes of the step's traffic pass at once",
            "gloo runs its collectives on the same cores as compute: overlap 0",
            "the virtual nodes share this machine's cores: compute at p ranks is slowed by "
            "the measured slowest-rank factor compute_slowdown[p]",
        ],
    }


if __name__ == "__main__":
    node_main(sys.argv[1:])
