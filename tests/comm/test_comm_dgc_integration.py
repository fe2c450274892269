"""Shared comm suite, part 2: ``dgc``, ``topk_adam``, the ``rsag`` and ``oktopk`` collectives.

One process group per world size (2 and 4 gloo processes) runs every check. Most checks
drive a strategy's ``reduce`` directly on synthetic buckets (two parameters), so what each
rank sent is known exactly; ``check_resume`` and ``check_adam_warmup`` go through DDP.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.distributed as dist
from test_comm_suite_integration import BUCKET_MB, Net, _batch, _flat, _grads, _loss, _rel
from torch import nn

from scidl.comm import CommConfig, build_strategy
from scidl.comm.buckets import Bucket, layout_of
from scidl.comm.sparse import k_for
from scidl.comm.sparse_allreduce import plan_for, warmup_density
from scidl.comm.wire import bytes_sent
from scidl.testing import run_distributed

SIZES = (300, 212)  # two parameters in one bucket
COLLECTIVES = ("allgather", "rsag", "oktopk", "auto")


def _setup(cfg: CommConfig):
    s = build_strategy(cfg)
    s.setup(None, None)
    params = [nn.Parameter(torch.zeros(n)) for n in SIZES]
    return s, params


def _bucket(params, buf: torch.Tensor) -> Bucket:
    return Bucket(buf, 0, True, params, layout_of(params, buf.numel()))


def _grad(rank: int, step: int, shared: float = 0.5) -> torch.Tensor:
    """Per-rank gradient: a component shared by all ranks (so selections overlap) + noise."""
    g0 = torch.Generator().manual_seed(step)
    g1 = torch.Generator().manual_seed(1000 + 100 * step + rank)
    n = sum(SIZES)
    return shared * torch.randn(n, generator=g0) * torch.linspace(0.1, 3, n) \
        + torch.randn(n, generator=g1)


def _same_everywhere(obj) -> bool:
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return all(o == out[0] for o in out)


def _sum(t: torch.Tensor) -> torch.Tensor:
    t = t.double().clone()
    dist.all_reduce(t)
    return t


# ----------------------------------------------------------------------------- checks

def check_parity_and_mass(rank, world, collectives=COLLECTIVES):
    """topk and dgc, every sparse collective: the result equals the dense allreduce of what
    the ranks sent, and sent + new accumulator = old accumulator + (momentum-corrected)
    gradient on every rank; every rank takes the same branch."""
    for name in ("topk", "dgc"):
        for coll in collectives:
            cfg = CommConfig(strategy=name, density=0.05, selection="exact",
                             sparse_collective=coll, momentum=0.9, link_alpha=1e-6)
            s, params = _setup(cfg)
            modes = []
            for t in range(4):
                g = _grad(rank, t)
                u_old = s.momenta.get(_bucket(params, g)).clone() if name == "dgc" else None
                v_old = s.residuals.get(_bucket(params, g)).clone()
                corrected = g + 0.9 * u_old if name == "dgc" else g
                got = s.reduce(_bucket(params, g.clone())).wait()
                v_new = s.residuals.get(_bucket(params, g))
                sent = v_old + corrected - v_new  # mass: what left this rank
                assert _rel(_sum(sent) / world, got) <= 1e-6, (name, coll, t)
                assert int((sent != 0).sum()) <= sum(k_for(n, 0.05) for n in SIZES)
                if name == "dgc":  # factor masking: u is zero exactly where v was sent
                    u_new = s.momenta.get(_bucket(params, g))
                    assert torch.equal(u_new, torch.where(sent != 0, 0.0, corrected.float()))
                modes.append(s.modes[0])
                s.end_step()
            assert _same_everywhere(modes), (name, coll, modes)
            allowed = {"allgather": {"sparse"}, "rsag": {"rsag", "rsag_dense"},
                       "oktopk": {"oktopk", "oktopk_dense"},
                       "auto": {"sparse", "rsag", "rsag_dense", "dense"}}[coll]
            assert modes and set(modes) <= allowed, (coll, modes)
    return True


def check_rsag_bytes(rank, world):
    """Bytes counted by rsag match its wire description: no overlap (fill 1, the
    description's worst case) and full overlap (fill 1/p); and grow less than p·k."""
    n, k = 64 * world * 8, 8 * world  # k/p entries per owner and rank
    cfg = CommConfig(strategy="topk", density=k / n, selection="exact",
                     sparse_collective="rsag")
    for overlap in (False, True):
        s, _ = _setup(cfg)
        g = torch.zeros(n)
        base = 0 if overlap else rank * k * world  # disjoint index blocks per rank
        idx = base + torch.arange(k) * 1  # consecutive: i mod p spreads evenly
        g[idx] = 1.0 + torch.arange(k, dtype=torch.float32)
        got = s.reduce(Bucket(g.clone(), 0, True)).wait()
        acct = s.end_step()
        want = _sum(g) / world
        assert _rel(got, want) <= 1e-6
        fill = 1.0 / world if overlap else 1.0
        wire = bytes_sent(plan_for("rsag", world, n, k, 4, fill), world, "gloo")
        assert acct["bytes_sent"] == wire, (overlap, acct["bytes_sent"], wire)
        if not overlap:
            assert wire == s.wire_bytes(cfg, n, world, backend="gloo")
        flat = bytes_sent(plan_for("allgather", world, n, k, 4), world, "gloo")
        if overlap and world > 2:  # ≈ 2/p of the all-gather's bytes
            assert acct["bytes_sent"] < flat, (acct["bytes_sent"], flat)
    return True


def check_oktopk(rank, world):
    """oktopk drops entries and conserves them: at most ⌈k_i/p⌉ kept per owner and
    parameter (≈ k in all, whatever p), fewer than rsag's exact sum holds; the result is
    the dense allreduce of what the ranks sent; each rank's sent values are its
    accumulator's own values at its selected, kept indices, and the dropped rest stays
    in its residual (sent + residual = gradient + old residual on every rank, so Σ sent +
    Σ residuals = Σ gradients over the steps); the kept entries are the largest of the
    exact sum in each owner's part of each parameter; bytes equal the wire description
    at the observed fill; auto never takes oktopk (it picks among the exact reductions),
    the same on every rank."""
    from scidl.comm.sparse_allreduce import owner_budget

    d = 0.05
    k = sum(k_for(n, d) for n in SIZES)
    budgets = [owner_budget(k_for(n, d), world) for n in SIZES]
    base = dict(strategy="topk", density=d, selection="exact")
    ok, params = _setup(CommConfig(**base, sparse_collective="oktopk"))
    ref, _ = _setup(CommConfig(**base, sparse_collective="rsag", error_feedback=False))
    total_g = torch.zeros(sum(SIZES), dtype=torch.float64)
    total_sent = torch.zeros_like(total_g)
    modes = []
    for t in range(4):
        g = _grad(rank, t, shared=0.1)  # little overlap: the owners must drop
        acc = ok.residuals.get(_bucket(params, g)).clone() + g  # what is selected from
        got = ok.reduce(_bucket(params, g.clone())).wait()
        v_new = ok.residuals.get(_bucket(params, g))
        sent = acc - v_new
        assert _rel(_sum(sent) / world, got) <= 1e-6, t
        where = sent != 0
        assert torch.equal(sent[where], acc[where]), t  # own values, whole
        assert int(where.sum()) <= k
        kept = int((got != 0).sum())
        assert kept <= world * sum(budgets) and kept == ok.kept[0], (kept, ok.kept[0])
        exact = ref.reduce(_bucket(params, acc.clone())).wait()  # Σ of the same selections
        assert int((exact != 0).sum()) > kept, t  # something was dropped
        starts = (0, SIZES[0])
        for r in range(world):  # owner r kept the largest of its part of each parameter
            for a, n, b in zip(starts, SIZES, budgets, strict=True):
                part = torch.arange(a, a + n)
                part = part[part % world == r]
                e, o = exact[part].abs(), got[part]
                assert int((o != 0).sum()) == min(b, int((e != 0).sum())), (r, a)
                if int((e != 0).sum()) > b:
                    assert float(e[o == 0].max()) <= float(e[o != 0].min()) + 1e-6
        # the wire description at the observed fill, with the all-to-all's even split
        # replaced by the pairs this rank's selection really sent to other owners
        plan = plan_for("oktopk", world, sum(SIZES), k, 4, ok.fill[0], sum(budgets))
        mine = torch.cat([torch.topk(acc[a:a + n].abs(), k_for(n, d)).indices + a
                          for a, n in ((0, SIZES[0]), (SIZES[0], SIZES[1]))])
        others = int((mine % world != rank).sum()) * 8
        wire = bytes_sent(plan, world, "gloo") - plan[1].bytes_sent(world) + others
        acct = ok.end_step()
        ref.end_step()
        assert acct["bytes_sent"] == wire, (acct["bytes_sent"], wire)
        total_g += g.double()
        total_sent += sent.double()
        modes.append(ok.modes[0])
    residual = ok.residuals.get(_bucket(params, g)).double()
    assert _rel(_sum(total_sent + residual), _sum(total_g)) <= 1e-6
    assert _same_everywhere(modes) and set(modes) == {"oktopk"}
    # no overlap at all (fill 1, the description's worst case): bytes = wire description
    n2, k2 = 64 * world * 8, 8 * world
    cfg = CommConfig(strategy="topk", density=k2 / n2, selection="exact",
                     sparse_collective="oktopk")
    s, _ = _setup(cfg)
    g2 = torch.zeros(n2)
    g2[rank * k2 * world + torch.arange(k2)] = 1.0 + torch.arange(k2, dtype=torch.float32)
    s.reduce(Bucket(g2, 0, True)).wait()
    assert s.end_step()["bytes_sent"] == s.wire_bytes(cfg, n2, world, backend="gloo")
    # auto on a bandwidth-bound link: an exact reduction, identically everywhere
    a, _ = _setup(CommConfig(**base, sparse_collective="auto", link_alpha=0.0,
                             link_beta=1e-8))
    picks = []
    for t in range(3):
        a.reduce(_bucket(params, _grad(rank, t, shared=0.1))).wait()
        picks.append(a.modes[0])
        a.end_step()
    assert _same_everywhere(picks)
    assert "oktopk" not in picks[-1], picks
    return True


def check_density(rank, world):
    """Threshold selection sends at least (exactly) the requested k per parameter, and
    the exponential warm-up runs 25 % → 6.25 % → target."""
    cfg = CommConfig(strategy="dgc", density=0.01, selection="threshold",
                     density_warmup_steps=2, sample_fraction=0.05)
    s = build_strategy(cfg)
    s.setup(None, None)
    params = [nn.Parameter(torch.zeros(n)) for n in (40_000, 30_000)]
    want = [0.25, 0.25, 0.0625, 0.0625, 0.015625, 0.015625, 0.01, 0.01]
    for t, d in enumerate(want):
        assert s.density_now() == d == warmup_density(0.01, t, 2)
        g = torch.randn(70_000, generator=torch.Generator().manual_seed(rank * 100 + t))
        before = s.sent_values
        s.reduce(Bucket(g, 0, True, params, layout_of(params, 70_000))).wait()
        if s.modes[0] in ("sparse", "rsag"):
            assert s.sent_values - before == k_for(40_000, d) + k_for(30_000, d), t
        s.end_step()
    return True


def check_nonfinite(rank, world, cases=None):
    """A NaN on rank 1 at step 1: every rank returns NaN (no hang), the state stays
    finite, and the next step is finite and identical on every rank."""
    cases = cases or [("dgc", "allgather"), ("dgc", "rsag"), ("topk", "rsag"),
                      ("topk", "oktopk"), ("topk_adam", "allgather"), ("topk_adam", "rsag")]
    for name, coll in cases:
        cfg = CommConfig(strategy=name, density=0.05, selection="exact",
                         sparse_collective=coll, adam_freeze_steps=1)
        s, params = _setup(cfg)
        for t in range(3):
            g = _grad(rank, t)
            if t == 1 and rank == 1:
                g[7] = float("nan")
            got = s.reduce(_bucket(params, g)).wait()
            if t == 1:
                assert bool(torch.isnan(got).all()), (name, coll)
                if name == "topk_adam":
                    mv = [s.m.get(_bucket(params, g)).clone(), s.v.get(_bucket(params, g)).clone()]
                s.on_skipped_step()
                s.end_step()
                if name == "topk_adam":  # the optimizer state is untouched by the skip
                    assert torch.equal(s.m.get(_bucket(params, g)), mv[0])
                    assert torch.equal(s.v.get(_bucket(params, g)), mv[1])
                    assert float(mv[1].sum()) > 0
                continue
            assert bool(torch.isfinite(got).all()), (name, coll, t)
            assert _same_everywhere(got.tolist())
            s.end_step()
        for store in ("residuals", "momenta", "m", "v"):
            if hasattr(s, store):
                assert all(bool(torch.isfinite(v).all())
                           for v in getattr(s, store).pieces().values())
    return True


def _train(net, ddp, strat, opt, steps, start=0):
    for t in range(start, start + steps):
        net.zero_grad(set_to_none=True)
        _loss(ddp, _batch(dist.get_rank(), t, 4)).backward()
        opt.step()
        strat.end_step()
    return _flat([p.detach().clone() for p in net.parameters()])


def check_resume(rank, world):
    """state_dict → torch.save/load(weights_only) → load_state_dict continues identically."""
    for cfg in (CommConfig(strategy="dgc", density=0.1, bucket_cap_mb=BUCKET_MB,
                           clip_norm=1.0, density_warmup_steps=1),
                CommConfig(strategy="topk_adam", density=0.1, bucket_cap_mb=BUCKET_MB,
                           adam_freeze_steps=1, sparse_collective="rsag"),
                CommConfig(strategy="topk", density=0.05, bucket_cap_mb=BUCKET_MB,
                           sparse_collective="oktopk")):
        torch.manual_seed(0)
        net = Net()
        strat = build_strategy(cfg)
        ddp = strat.wrap(net)
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        _train(net, ddp, strat, opt, 2)
        buf = io.BytesIO()
        torch.save(strat.state_dict(), buf)
        state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
        net2 = copy.deepcopy(net)
        strat2 = build_strategy(cfg)
        ddp2 = strat2.wrap(net2)
        strat2.load_state_dict(state)
        opt2 = torch.optim.SGD(net2.parameters(), lr=0.05)
        a = _train(net, ddp, strat, opt, 2, start=2)
        b = _train(net2, ddp2, strat2, opt2, 2, start=2)
        assert torch.equal(a, b), (cfg.strategy, _rel(b, a))
    return True


def check_adam_warmup(rank, world):
    """topk_adam's dense warm-up with plain SGD is exactly torch's Adam on the mean
    gradient; then the compressed steps stay close to it."""
    cfg = CommConfig(strategy="topk_adam", density=0.2, bucket_cap_mb=BUCKET_MB,
                     adam_freeze_steps=3)
    torch.manual_seed(0)
    net = Net()
    ref = copy.deepcopy(net)
    strat = build_strategy(cfg)
    ddp = strat.wrap(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.01)
    for t in range(3):
        net.zero_grad(set_to_none=True)
        _loss(ddp, _batch(rank, t, 4)).backward()
        opt.step()
        strat.end_step()
        ref.zero_grad(set_to_none=True)
        _loss(ref, _batch(rank, t, 4)).backward()
        for p in ref.parameters():
            p.grad = p.grad.to_dense()
            dist.all_reduce(p.grad)
            p.grad /= world
        ref_opt.step()
    a = _flat([p.detach() for p in net.parameters()])
    b = _flat([p.detach() for p in ref.parameters()])
    assert _rel(a, b) <= 1e-5, _rel(a, b)
    assert strat.adam_steps == 3
    for t in range(3, 5):  # compressed: the update is sparse, the weights still move
        net.zero_grad(set_to_none=True)
        _loss(ddp, _batch(rank, t, 4)).backward()
        g = _flat(_grads(net))
        assert 0 < int((g != 0).sum()) < g.numel()
        assert math.isfinite(float(g.sum()))
        opt.step()
        strat.end_step()
    return True


def suite(rank: int, world: int) -> bool:
    torch.set_num_threads(1)
    check_rsag_bytes(rank, world)
    check_oktopk(rank, world)
    if world > 2:  # the all-to-all with several peers; the rest runs on 2 ranks
        check_parity_and_mass(rank, world, collectives=("rsag", "oktopk"))
        check_nonfinite(rank, world, cases=[("dgc", "rsag"), ("dgc", "oktopk")])
        return True
    check_parity_and_mass(rank, world)
    check_nonfinite(rank, world)
    check_density(rank, world)
    check_resume(rank, world)
    check_adam_warmup(rank, world)
    return True


@pytest.mark.timeout(240)
@pytest.mark.parametrize("world", [2, 4])
def test_dgc_topk_adam_and_rsag(world):
    assert run_distributed(suite, world, timeout=200) == [True] * world
