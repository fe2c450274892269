"""Each strategy's own wire description (``wire_bytes``) equals what it really sends.

Two gloo processes train a small MLP for three steps under every strategy; on the last
step (steady state: DDP has re-bucketed, ``grouped`` has planned its groups) the bytes
the strategy's counters recorded equal the sum of ``cls.wire_bytes`` over the buckets
(or groups) it reduced, from its config and the buckets' parameter shapes alone. The
cost model prices strategies from the same description.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scidl.comm import CommConfig, build_strategy, get_strategy_class
from scidl.testing import run_distributed

CASES = [
    # timed: the Python hook this test spies on (untimed dense is DDP's own allreduce,
    # counted from its buckets: tests/comm/test_comm_dense_builtin_integration.py)
    {"strategy": "dense", "timing": True},
    {"strategy": "fp16"},
    {"strategy": "bf16"},
    {"strategy": "grouped", "group_mb": 0.002, "group_gap_ms": 1e9},
    {"strategy": "hierarchical", "ranks_per_node": 2},
    {"strategy": "hierarchical", "ranks_per_node": 1},
    {"strategy": "powersgd", "rank": 2},
    {"strategy": "topk", "density": 0.05, "selection": "exact"},
    {"strategy": "topk", "density": 0.05, "selection": "exact", "value_dtype": "fp16"},
    {"strategy": "topk", "density": 0.6, "selection": "exact"},  # the dense switch
    {"strategy": "lag", "lag_inner": "powersgd", "rank": 2},
    {"strategy": "quant", "quant_chunk": 16},
    {"strategy": "quant", "quant_bits": 4, "quant_chunk": 16},
]


def _last_step(cfg: CommConfig, rank: int) -> tuple[float, float]:
    """(bytes recorded, bytes the wire description predicts) of step 3 on this rank."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                        nn.Linear(32, 4))
    strat = build_strategy(cfg)
    ddp = strat.wrap(net)
    target = strat.inner if cfg.strategy == "lag" else strat
    seen: list[tuple[int, list[tuple[int, ...]] | None]] = []
    inner_reduce = target.reduce

    def spy(bucket):
        shapes = [tuple(p.shape) for p in bucket.params] if bucket.layout else None
        seen.append((bucket.buffer.numel(), shapes))
        return inner_reduce(bucket)

    target.reduce = spy
    for step in range(3):
        seen.clear()
        g = torch.Generator().manual_seed(100 * step + rank)
        x, y = torch.randn(8, 16, generator=g), torch.randn(8, 4, generator=g)
        net.zero_grad(set_to_none=True)
        ((ddp(x) - y) ** 2).mean().backward()
        strat.drain()
        sent = strat.end_step()["bytes_sent"]
    cls = get_strategy_class(cfg.strategy)
    if cfg.strategy == "grouped":  # one fused allreduce per planned group
        want = sum(cls.wire_bytes(cfg, b // 4, strat.world, None, "gloo")
                   for b in strat.group_bytes)
    else:
        want = sum(cls.wire_bytes(cfg, n, strat.world, shapes, "gloo") for n, shapes in seen)
    return sent, want


def _worker(rank: int, world: int) -> list[tuple[float, float]]:
    return [_last_step(CommConfig(bucket_cap_mb=0.002, **case), rank) for case in CASES]


@pytest.mark.timeout(180)
def test_wire_bytes_match_the_counters_of_every_strategy():
    per_rank = run_distributed(_worker, 2, timeout=150)
    for case, (sent, want) in zip(CASES, per_rank[0], strict=True):
        assert sent > 0 and sent == want, (case, sent, want)
    assert per_rank[0] == per_rank[1]
