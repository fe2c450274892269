"""Anderson acceleration under DDP on 2 gloo ranks: identical parameters after every step."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from scidl.optim import OptimConfig, build_optimizer
from scidl.testing import run_distributed


def _worker(rank: int, world: int, cfg_kw: dict) -> dict:
    """The safeguard modes in one pair of processes (one spawn for the test)."""
    torch.set_num_threads(1)
    out = {mode: _train(rank, world, cfg_kw, mode == "forward") for mode in ("full", "forward")}
    out["deferred"] = _train(rank, world, {**cfg_kw, "aa_safeguard_sync": "deferred"}, True, 24)
    return out


def _train(rank: int, world: int, cfg_kw: dict, forward_only: bool, steps: int = 12) -> dict:
    import torch.distributed as dist

    reduces: list[bool] = []  # async_op of each all_reduce the optimizer starts
    orig = dist.all_reduce

    def recording(tensor, *args, **kwargs):
        reduces.append(bool(kwargs.get("async_op", False)))
        return orig(tensor, *args, **kwargs)

    dist.all_reduce = recording
    try:
        return _train_loop(rank, world, cfg_kw, forward_only, reduces, steps)
    finally:
        dist.all_reduce = orig


def _train_loop(rank: int, world: int, cfg_kw: dict, forward_only: bool,
                reduces: list[bool], steps: int) -> dict:
    import torch.distributed as dist

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))
    ddp = DDP(model)
    opt = build_optimizer(model, OptimConfig(**cfg_kw))
    gen = torch.Generator().manual_seed(100 + rank)  # different data on each rank
    mismatches, backwards = 0, 0
    for _ in range(steps):
        x, y = torch.randn(8, 5, generator=gen), torch.randn(8, 1, generator=gen)

        def closure(x=x, y=y):
            nonlocal backwards
            backwards += 1
            opt.zero_grad()
            loss = nn.functional.mse_loss(ddp(x), y)  # local loss: AA all-reduces it
            loss.backward()
            return loss.detach()

        if forward_only:  # as the trainer's closure: a forward pass of the local model
            closure.evaluate = lambda x=x, y=y: nn.functional.mse_loss(model(x), y)
        closure()
        opt.step(closure) if opt.requires_closure else opt.step()
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        mismatches += int(not all(torch.equal(gathered[0], g) for g in gathered))
    return {"mismatches": mismatches, "counters": dict(opt.counters), "flat": flat.tolist(),
            "backwards": backwards, "reduces": reduces, "open": bool(opt._pending)}


CFG = dict(name="anderson", aa_base="sgd", lr=0.05, momentum=0.9, aa_history=4,
           aa_every=2, aa_safeguard=True, aa_ma="auto", aa_ma_window=3, aa_ma_tol=0.3)


@pytest.fixture(scope="module")
def two_ranks() -> list[dict]:
    """Every mode's run on 2 gloo ranks, from one spawn shared by the tests below."""
    return run_distributed(_worker, 2, CFG)


@pytest.mark.timeout(120)
def test_identical_params_across_ranks_after_aa_steps(two_ranks):
    """Full closures (forward + backward + gradient all-reduce) and, with ``evaluate``,
    forward-only safeguard losses (one scalar-pair all-reduce, no backward): identical
    parameters on both ranks, and the same decisions in both modes."""
    out = two_ranks
    for mode in ("full", "forward"):
        for r in (o[mode] for o in out):
            assert r["mismatches"] == 0
            attempts = r["counters"]["extrapolations"] + r["counters"]["rejected"]
            assert attempts >= 3
            assert r["backwards"] == 12 + (0 if mode == "forward" else 2 * attempts)
        assert out[0][mode]["counters"] == out[1][mode]["counters"]
        assert out[0][mode]["flat"] == out[1][mode]["flat"]
    assert out[0]["full"]["counters"] == out[0]["forward"]["counters"]
    for r in out:
        attempts = r["forward"]["counters"]["extrapolations"] + r["forward"]["counters"]["rejected"]
        assert r["forward"]["reduces"] == [False] * attempts  # one blocking pair per attempt


@pytest.mark.timeout(120)
def test_deferred_decision_is_the_same_on_all_ranks(two_ranks):
    """``aa_safeguard_sync=deferred``: the loss pair's all-reduce is started without
    waiting (async) and waited for in the next step; every rank still takes the same
    decisions (different data per rank, so the local losses differ) and holds the same
    parameters after every step."""
    rs = [o["deferred"] for o in two_ranks]
    for r in rs:
        c = r["counters"]
        assert r["mismatches"] == 0 and r["backwards"] == 24
        assert c["extrapolations"] >= 1 and c["rejected"] >= 1
        # one asynchronous reduce per attempt, decided or still open after the last step
        assert r["reduces"] == [True] * (c["extrapolations"] + c["rejected"] + r["open"])
    assert rs[0]["counters"] == rs[1]["counters"] and rs[0]["flat"] == rs[1]["flat"]
