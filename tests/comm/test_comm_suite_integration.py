"""Shared suite: every comm strategy on 2 and 4 gloo processes, several DDP buckets.

One process group per world size runs every strategy (spawning costs seconds; checks
are cheap). Each rank computes its local gradient on a plain replica, the exact mean
is formed with an fp64 allreduce, and the strategy's result (``param.grad`` after DDP's
backward) is compared with it. Bytes per step are compared with each strategy's
formula, computed here from the buckets the strategy actually saw.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.distributed as dist
from torch import nn

from scidl.comm import CommConfig, build_strategy
from scidl.comm.accounting import allgather_bytes, reduce_scatter_bytes, ring_allreduce_bytes
from scidl.comm.sparse import k_for, prefer_dense
from scidl.testing import run_distributed

BUCKET_MB = 0.0002  # ≈ 52 floats: 4 buckets, the first holding two tensors


class Net(nn.Module):
    """Tiny model with a sparse embedding, matrices and vectors."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8, sparse=True)
        self.l1 = nn.Linear(8, 24)
        self.l2 = nn.Linear(24, 24)
        self.l3 = nn.Linear(24, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids).mean(1)
        return self.l3(torch.tanh(self.l2(torch.tanh(self.l1(h)))))


def _batch(rank: int, step: int, bs: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randint(0, 20, (bs, 4), generator=g), torch.randn(bs, 3, generator=g)


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return ((model(x) - y) ** 2).sum()


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.to_dense().clone() if p.grad is not None else torch.zeros_like(p)
            for p in model.parameters()]


def _flat(ts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


def _exact_mean(local: list[torch.Tensor], world: int) -> torch.Tensor:
    flat = _flat(local).double()
    dist.all_reduce(flat)
    return flat / world


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def _run(cfg: CommConfig, rank: int, world: int, steps: int = 3, bs: int = 1, lr: float = 0.05):
    """Train ``steps`` SGD steps under ``cfg``; return per-step records."""
    torch.manual_seed(0)
    net = Net()
    ref = copy.deepcopy(net)
    strat = build_strategy(cfg)
    ddp = strat.wrap(net)
    seen: list[list[tuple[int, int, tuple[int, ...]]]] = [[]]
    target = strat.inner if cfg.strategy == "lag" else strat
    inner_reduce = target.reduce

    def spy(bucket):  # record the buckets the strategy reduces
        segs = tuple(n for _, n in bucket.layout) or (bucket.buffer.numel(),)
        seen[-1].append((bucket.index, bucket.buffer.numel(), segs))
        return inner_reduce(bucket)

    target.reduce = spy
    sparse_seen: list[list[int]] = [[]]
    inner_sparse = strat.reduce_sparse

    def spy_sparse(grad):  # dense: the embedding's own bucket, reduced as a sparse tensor
        c = grad.coalesce()
        sparse_seen[-1].append(c._values().numel() * 4 + c._indices().numel() * 8)
        return inner_sparse(grad)

    strat.reduce_sparse = spy_sparse
    recs = []
    for t in range(steps):
        batch = _batch(rank, t, bs)
        ref.load_state_dict(net.state_dict())
        ref.zero_grad(set_to_none=True)
        _loss(ref, batch).backward()
        local = _grads(ref)
        before = _residual_state(strat)
        net.zero_grad(set_to_none=True)
        _loss(ddp, batch).backward()
        got = _grads(net)
        sparse_grad = net.emb.weight.grad is not None and net.emb.weight.grad.is_sparse
        with torch.no_grad():
            for p in net.parameters():
                if p.grad is not None:
                    p.add_(p.grad.to_dense(), alpha=-lr)
        acct = strat.end_step()
        recs.append({
            "local": _flat(local), "mean": _exact_mean(local, world).float(), "got": _flat(got),
            "bytes": acct["bytes_sent"], "recv": acct["bytes_recv"], "buckets": seen[-1],
            "before": before, "after": _residual_state(strat), "sparse_grad": sparse_grad,
            "modes": dict(getattr(target, "modes", {})), "exposed": acct["exposed_s"],
            "sparse_buckets": sparse_seen[-1],
        })
        seen.append([])
        sparse_seen.append([])
    recs.append(strat.report())
    return recs


def _residual_state(strat) -> torch.Tensor | None:
    """This rank's error-feedback state flattened in parameter order (topk/powersgd)."""
    s = strat.inner if strat.name == "lag" else strat
    if s.name == "topk":
        pieces = s.residuals.pieces()
    elif s.name == "powersgd":
        pieces = {k: v.reshape(-1) for k, v in s.err.items()}
    else:
        return None
    out = []
    for pid, p in zip(s.param_ids, range(len(s.param_ids)), strict=True):
        del p
        v = pieces.get(pid)
        out.append(v.clone() if v is not None else None)
    return out


def _res_flat(state, like: list[torch.Tensor]) -> torch.Tensor:
    return _flat([s if s is not None else torch.zeros(t.numel()) for s, t in zip(state, like,
                                                                                    strict=True)])


def _k(segs: tuple[int, ...], density: float) -> int:
    """Planned entries of a bucket: top-k is taken per parameter, k_i = ⌈density·n_i⌉."""
    return sum(k_for(n, density) for n in segs)


# ----------------------------------------------------------------------------- checks

def _check_exact(rank, world, name, tol, **kw):
    recs = _run(CommConfig(strategy=name, bucket_cap_mb=BUCKET_MB, **kw), rank, world)
    rep = recs.pop()
    for i, r in enumerate(recs):
        assert _rel(r["got"], r["mean"]) <= tol, (name, _rel(r["got"], r["mean"]))
        # dense: torch's sparse allreduce, the gradient stays sparse; every other
        # strategy reduces it as dense and hands back a dense gradient (sparse-as-dense)
        assert r["sparse_grad"] == (name == "dense"), (name, r["sparse_grad"])
        nb = len(r["buckets"]) + len(r["sparse_buckets"])
        assert nb >= 2 or i == 0, f"{name}: expected several buckets"  # step 0: DDP's 1st cap
        assert len(r["sparse_buckets"]) == (name == "dense")
    # DDP re-buckets after step 0 (2 buckets → 4): state must survive the rebuild
    assert len(recs[-1]["buckets"]) + len(recs[-1]["sparse_buckets"]) >= 4 or name == "grouped"
    return recs, rep


def _dense_bytes(buckets, world, elem=4):
    return sum(ring_allreduce_bytes(n * elem, world) for _, n, _ in buckets)


def check_dense_family(rank, world):
    out = {}
    recs, _ = _check_exact(rank, world, "dense", 1e-6)
    for r in recs:  # the sparse bucket: all-gather of its (index, row) pairs
        sparse = sum(allgather_bytes(b, world) for b in r["sparse_buckets"])
        assert r["bytes"] == r["recv"] == _dense_bytes(r["buckets"], world) + sparse
    out["dense"] = recs[0]["bytes"]
    for name, tol in (("fp16", 2.0**-10), ("bf16", 2.0**-7)):
        recs, _ = _check_exact(rank, world, name, tol)
        for r in recs:
            assert r["bytes"] == _dense_bytes(r["buckets"], world, elem=2)
            assert _rel(r["got"], r["mean"]) > 0, f"{name} cannot be exact"
    recs, rep = _check_exact(rank, world, "grouped", 1e-6, group_mb=0.0005, group_gap_ms=1e9)
    sizes = rep["group_bytes"]
    assert len(sizes) >= 2 and sum(sizes) == sum(n for _, n, _ in recs[-1]["buckets"]) * 4
    # after planning, one allreduce per group: bytes = Σ_groups ring(group bytes)
    assert recs[-1]["bytes"] == sum(ring_allreduce_bytes(b, world) for b in sizes)
    for per_node in sorted({1, 2, world}):
        recs, rep = _check_exact(rank, world, "hierarchical", 1e-6, ranks_per_node=per_node)
        nodes = world // per_node
        for r in recs:
            exp = 0
            for _, n, _ in r["buckets"]:
                if per_node == 1:
                    exp += ring_allreduce_bytes(n * 4, nodes)
                    continue
                pad = math.ceil(n / per_node) * per_node
                # gloo's reduce-scatter sends an allreduce's bytes
                exp += reduce_scatter_bytes(pad * 4, per_node, "gloo")
                exp += allgather_bytes(pad // per_node * 4, per_node)
                exp += ring_allreduce_bytes(pad // per_node * 4, nodes)
            assert r["bytes"] == exp, (per_node, r["bytes"], exp)
    return out


def check_lag(rank, world):
    for inner in ("dense", "topk"):
        recs = _run(CommConfig(strategy="lag", lag_inner=inner, bucket_cap_mb=BUCKET_MB,
                               density=1.0), rank, world, steps=4)
        recs.pop()
        assert float(recs[0]["got"].abs().max()) == 0.0, "step 0 must apply a zero gradient"
        for prev, cur in zip(recs, recs[1:], strict=False):
            assert _rel(cur["got"], prev["mean"]) <= 1e-6, (inner, _rel(cur["got"], prev["mean"]))
            assert _rel(cur["got"], cur["mean"]) > 1e-3  # really the old gradient
            assert cur["bytes"] == _dense_bytes(cur["buckets"], world)
    return True


def check_topk(rank, world):
    # density 1.0 equals dense (the rule sends such buckets densely), EF state stays zero
    recs = _run(CommConfig(strategy="topk", density=1.0, bucket_cap_mb=BUCKET_MB), rank, world)
    recs.pop()
    for r in recs:
        assert _rel(r["got"], r["mean"]) <= 1e-6
        assert r["bytes"] == _dense_bytes(r["buckets"], world)
    # error feedback: Σ_r (g_r + e_r − e'_r) = p·ḡ, and only k entries per bucket are sent
    for sel, vdt in (("exact", "fp32"), ("threshold", "fp32"), ("exact", "fp16")):
        cfg = CommConfig(strategy="topk", density=0.1, bucket_cap_mb=BUCKET_MB, selection=sel,
                         value_dtype=vdt, sample_fraction=0.5)
        recs = _run(cfg, rank, world, steps=4, bs=4)
        rep = recs.pop()
        assert rep["sparse_calls"] > 0
        for r in recs:
            old = _res_flat(r["before"], [torch.zeros(n) for n in _shapes()])
            new = _res_flat(r["after"], [torch.zeros(n) for n in _shapes()])
            sent = r["local"] + old - new
            total = sent.double().clone()
            dist.all_reduce(total)
            tol = 1e-6 if vdt == "fp32" else 2.0**-10  # fp16 sums of dense buckets round
            assert _rel(total / world, r["got"]) <= tol, (sel, vdt, _rel(total / world, r["got"]))
            assert _rel(r["got"], r["mean"]) > 1e-3, "density 0.1 cannot be exact"
            if sel == "exact":
                vb = 2 if vdt == "fp16" else 4
                nnz = int((sent != 0).sum())
                assert nnz <= sum(n if prefer_dense(world, _k(segs, 0.1), n, vb)
                                  else _k(segs, 0.1) for _, n, segs in r["buckets"])
        # bytes: counts gather + padded payload for sparse buckets, ring for dense ones
        vb = 2 if vdt == "fp16" else 4
        for r in recs:
            exp = 0
            for i, n, segs in r["buckets"]:
                k = _k(segs, 0.1)
                if prefer_dense(world, k, n, vb):
                    exp += ring_allreduce_bytes(n * vb, world)
                    assert r["modes"][i] == "dense"
                elif sel == "exact":
                    assert r["modes"][i] == "sparse"
                    exp += allgather_bytes(16, world) + allgather_bytes(k * (4 + vb), world)
            if sel == "exact":
                assert r["bytes"] == exp, (r["bytes"], exp)
    # without error feedback: the mean of each rank's top-k, residual never kept
    recs = _run(CommConfig(strategy="topk", density=0.1, bucket_cap_mb=BUCKET_MB,
                           error_feedback=False, selection="exact"), rank, world, bs=4)
    recs.pop()
    for r in recs:
        assert r["after"] == [None] * len(r["after"])
    return True


def check_switch(rank, world):
    """The sparse→dense switch happens exactly where p·nnz·(1+s_idx/s_val) > 2n."""
    modes = {}
    for d in (0.9 / world, 1.1 / world):
        recs = _run(CommConfig(strategy="topk", density=d, bucket_cap_mb=BUCKET_MB,
                               selection="exact"), rank, world, steps=1, bs=4)
        recs.pop()
        r = recs[0]
        for i, n, segs in r["buckets"]:
            want = "dense" if prefer_dense(world, _k(segs, d), n, 4) else "sparse"
            assert r["modes"][i] == want, (d, i, n, r["modes"][i])
        modes[d] = sorted(set(r["modes"].values()))
    assert "sparse" in modes[0.9 / world] and modes[1.1 / world] == ["dense"]
    return True


def check_powersgd(rank, world):
    # per-rank batch of 1: every matrix gradient of the mean has rank ≤ p ≤ r → exact
    recs = _run(CommConfig(strategy="powersgd", rank=4, bucket_cap_mb=BUCKET_MB), rank, world)
    rep = recs.pop()
    assert rep["compression_ratio"] > 1.0
    for r in recs[1:]:  # step 0: Q random, P spans the column space already → exact too
        assert _rel(r["got"], r["mean"]) <= 1e-4, _rel(r["got"], r["mean"])
    # rank 1 on bigger batches: lossy, error feedback conserves mass per rank
    recs = _run(CommConfig(strategy="powersgd", rank=1, bucket_cap_mb=BUCKET_MB), rank, world,
                bs=8)
    recs.pop()
    for r in recs:
        assert _rel(r["got"], r["mean"]) > 1e-3
        old = _res_flat(r["before"], [torch.zeros(n) for n in _shapes()])
        new = _res_flat(r["after"], [torch.zeros(n) for n in _shapes()])
        # compressed entries: g + e_old = ĝ + e_new; exact entries: e stays zero
        mask = new != 0
        lhs = (r["local"] + old)[mask]
        rhs = (r["got"] + new)[mask]
        assert mask.any() and _rel(rhs, lhs) <= 1e-5
    # warm-up steps are exact
    recs = _run(CommConfig(strategy="powersgd", rank=1, warmup_steps=2,
                           bucket_cap_mb=BUCKET_MB), rank, world, steps=2, bs=8)
    recs.pop()
    assert all(_rel(r["got"], r["mean"]) <= 1e-6 for r in recs)
    return True


def _train_steps(net, ddp, strat, steps, start=0):
    for t in range(start, start + steps):
        net.zero_grad(set_to_none=True)
        _loss(ddp, _batch(dist.get_rank(), t, 4)).backward()
        with torch.no_grad():
            for p in net.parameters():
                p.add_(p.grad.to_dense(), alpha=-0.05)
        strat.end_step()
    return _grads(net)


def check_resume(rank, world):
    """state_dict → torch.save/load(weights_only) → load_state_dict continues identically."""
    import io

    for cfg in (CommConfig(strategy="topk", density=0.1, bucket_cap_mb=BUCKET_MB),
                CommConfig(strategy="powersgd", rank=1, bucket_cap_mb=BUCKET_MB),
                CommConfig(strategy="lag", lag_inner="topk", density=0.1,
                           bucket_cap_mb=BUCKET_MB)):
        torch.manual_seed(0)
        net = Net()
        strat = build_strategy(cfg)
        ddp = strat.wrap(net)
        _train_steps(net, ddp, strat, 2)
        buf = io.BytesIO()
        torch.save(strat.state_dict(), buf)
        state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
        net2 = copy.deepcopy(net)
        strat2 = build_strategy(cfg)
        ddp2 = strat2.wrap(net2)
        strat2.load_state_dict(state)
        a = _flat(_train_steps(net, ddp, strat, 2, start=2))
        b = _flat(_train_steps(net2, ddp2, strat2, 2, start=2))
        assert torch.equal(a, b), (cfg.strategy, _rel(b, a))
        assert a.abs().sum() > 0
    return True


def _shapes() -> list[int]:
    return [p.numel() for p in Net().parameters()]


def suite(rank: int, world: int) -> dict:
    out = check_dense_family(rank, world)
    check_topk(rank, world)
    check_switch(rank, world)
    check_powersgd(rank, world)
    check_lag(rank, world)
    if world == 2:
        check_resume(rank, world)
    return out


@pytest.mark.timeout(240)
@pytest.mark.parametrize("world", [2, 4])
def test_every_strategy_reduces_correctly(world):
    results = run_distributed(suite, world, timeout=200)
    assert len(results) == world
    assert results[0]["dense"] > 0
