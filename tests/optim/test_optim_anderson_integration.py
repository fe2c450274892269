"""Anderson acceleration under DDP on 2 gloo ranks: identical parameters after every step."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from scidl.optim import OptimConfig, build_optimizer
from scidl.testing import run_distributed


def _worker(rank: int, world: int, cfg_kw: dict) -> dict:
    import torch.distributed as dist

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))
    ddp = DDP(model)
    opt = build_optimizer(model, OptimConfig(**cfg_kw))
    gen = torch.Generator().manual_seed(100 + rank)  # different data on each rank
    mismatches = 0
    for _ in range(12):
        x, y = torch.randn(8, 5, generator=gen), torch.randn(8, 1, generator=gen)

        def closure(x=x, y=y):
            opt.zero_grad()
            loss = nn.functional.mse_loss(ddp(x), y)  # local loss: AA all-reduces it
            loss.backward()
            return loss.detach()

        closure()
        opt.step(closure) if opt.requires_closure else opt.step()
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        mismatches += int(not all(torch.equal(gathered[0], g) for g in gathered))
    return {"mismatches": mismatches, "counters": dict(opt.counters), "flat": flat.tolist()}


@pytest.mark.timeout(120)
def test_identical_params_across_ranks_after_aa_steps():
    cfg = dict(name="anderson", aa_base="sgd", lr=0.05, momentum=0.9, aa_history=4,
               aa_every=2, aa_safeguard=True, aa_ma="auto", aa_ma_window=3, aa_ma_tol=0.3)
    out = run_distributed(_worker, 2, cfg)
    for r in out:
        assert r["mismatches"] == 0
        assert r["counters"]["extrapolations"] + r["counters"]["rejected"] >= 3
    assert out[0]["counters"] == out[1]["counters"]
    assert out[0]["flat"] == out[1]["flat"]
