"""The bytes the accounting counts are the bytes gloo really writes to its sockets.

Each rank reads its own ``wchar`` (bytes passed to write/send system calls, all threads,
from ``/proc/self/io``) around collectives and training steps. One 4-process gloo job
measures groups of 4 and of 2 processes (ranks 0 and 1), so both sizes cost one start-up.
"""

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from scidl.comm import CommConfig, build_strategy
from scidl.comm.accounting import (
    allgather_bytes,
    broadcast_bytes,
    reduce_scatter_bytes,
    ring_allreduce_bytes,
)
from scidl.testing import run_distributed

pytestmark = pytest.mark.skipif(not Path("/proc/self/io").is_file(), reason="needs /proc/self/io")

NBYTES = 1 << 19  # payload bytes per collective
HEADER = 48  # gloo's per-message header, not payload


def _wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


def _written(fn, group, reps=3) -> float:
    """Mean bytes this process writes per call of ``fn`` (after a warm-up call)."""
    fn()  # connections, one-time warnings
    dist.barrier(group=group)
    before = _wchar()
    for _ in range(reps):
        fn()
    after = _wchar()
    dist.barrier(group=group)
    return (after - before) / reps


def _collectives(group, p, rank):
    """(op, bytes written, bytes counted) of each collective on ``group`` (p ranks)."""
    rs = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    ag = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    n = NBYTES // 4
    t, shard, full = torch.ones(n), torch.empty(n // p), torch.empty(n * p)
    root = p - 1  # a non-zero root: the tree is rooted at the source
    src = root if group is None else dist.get_global_rank(group, root)
    return [
        ("allreduce", _written(lambda: dist.all_reduce(t, group=group), group),
         ring_allreduce_bytes(NBYTES, p, "gloo")),
        ("reduce_scatter", _written(lambda: rs(shard, t, group=group), group),
         reduce_scatter_bytes(NBYTES, p, "gloo")),
        ("allgather", _written(lambda: ag(full, t, group=group), group),
         allgather_bytes(NBYTES, p, "gloo")),
        ("broadcast", _written(lambda: dist.broadcast(t, src=src, group=group), group),
         broadcast_bytes(NBYTES, p, rank, root, "gloo")),
    ]


def _steps(group, cases):
    """(case, bytes written, bytes counted) per DDP training step of each strategy."""
    out = []
    for label, over in cases:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(256, 512), nn.Tanh(), nn.Linear(512, 128))
        strat = build_strategy(CommConfig(bucket_cap_mb=0.5, **over))
        ddp = DDP(model, process_group=group, **strat.ddp_kwargs())
        strat.install(ddp, group)
        x = torch.randn(8, 256)

        def step(ddp=ddp, strat=strat, x=x):
            ddp(x).square().mean().backward()
            strat.end_step()

        step()  # DDP rebuilds its buckets after the first step
        counted = strat.counters.bytes_sent
        wrote = _written(step, group)
        out.append((label, wrote, (strat.counters.bytes_sent - counted) / 4))  # 4 steps ran
    return out


def _worker(rank, world):
    pair = dist.new_group([0, 1])  # every rank creates every group
    out = {4: _collectives(None, 4, rank) + _steps(None, [
        ("dense", {"strategy": "dense"}),
        ("hierarchical_1x4", {"strategy": "hierarchical", "ranks_per_node": 4}),
        ("hierarchical_2x2", {"strategy": "hierarchical", "ranks_per_node": 2}),
    ])}
    if rank < 2:
        out[2] = _collectives(pair, 2, rank) + _steps(pair, [
            ("dense", {"strategy": "dense"}),
            ("hierarchical_1x2", {"strategy": "hierarchical", "ranks_per_node": 2}),
        ])
    dist.barrier()
    return out


@pytest.mark.timeout(150)
def test_gloo_bytes_on_the_wire_match_the_accounting():
    per_rank = run_distributed(_worker, 4, timeout=140)
    for rank, by_size in enumerate(per_rank):
        assert set(by_size) == ({4, 2} if rank < 2 else {4})
        for p, rows in by_size.items():
            for op, wrote, counted in rows:
                # the payload as counted, plus a header per message and a little slack
                assert counted <= wrote <= counted * 1.01 + 64 * HEADER, (p, rank, op, wrote, counted)
            measured = {op: wrote for op, wrote, _ in rows}
            # gloo's reduce-scatter sends what an allreduce sends, not (p-1)/p·n
            assert measured["reduce_scatter"] > 1.9 * reduce_scatter_bytes(NBYTES, p)
    steps = {p: {op: counted for op, _, counted in rows} for p, rows in per_rank[0].items()}
    # one node (reduce-scatter + allgather): 3(p-1)/p·n on gloo, 1.5x dense's 2(p-1)/p·n
    assert steps[2]["hierarchical_1x2"] == pytest.approx(1.5 * steps[2]["dense"], rel=1e-3)
    assert steps[4]["hierarchical_1x4"] == pytest.approx(1.5 * steps[4]["dense"], rel=1e-3)
