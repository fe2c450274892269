"""``quant``: block-scaled integer gradients, two-phase reduction with error feedback."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.distributed as dist
from torch import nn

from scidl.comm import CommConfig, build_strategy
from scidl.comm.quant import Quant, block_bytes, dequantize, quantize, shard_len
from scidl.comm.wire import bytes_sent
from scidl.testing import run_distributed

CHUNK = 64


@pytest.mark.parametrize("bits", [8, 4])
def test_integers_on_the_grid_come_back_exactly(bits):
    qmax = 2 ** (bits - 1) - 1
    torch.manual_seed(0)
    q = torch.randint(-qmax, qmax + 1, (4, CHUNK)).float()
    q[:, 0] = qmax  # each block's largest magnitude is qmax: scale = the block's factor
    scales = torch.tensor([0.5, 2.0, 1e-3, 7.0])
    x = (q * scales[:, None]).reshape(-1)
    u, s = quantize(x, bits, CHUNK)
    assert u.dtype == torch.uint8 and u.numel() == x.numel() * bits // 8
    assert torch.allclose(s, scales)
    assert torch.allclose(dequantize(u, s, bits, CHUNK), x, rtol=1e-6, atol=0)


def test_rounding_error_is_at_most_half_a_step_and_zero_blocks_stay_zero():
    torch.manual_seed(1)
    x = torch.randn(3 * CHUNK)
    x[CHUNK:2 * CHUNK] = 0
    for bits in (8, 4):
        u, s = quantize(x, bits, CHUNK)
        y = dequantize(u, s, bits, CHUNK)
        step = s.repeat_interleave(CHUNK)
        assert bool(((y - x).abs() <= step / 2 + 1e-7).all())
        assert s[1] == 0 and bool((y[CHUNK:2 * CHUNK] == 0).all())


def test_a_nonfinite_entry_makes_its_whole_block_nonfinite():
    x = torch.randn(2 * CHUNK)
    for bad in (float("nan"), float("inf")):
        x2 = x.clone()
        x2[3] = bad
        u, s = quantize(x2, 8, CHUNK)
        y = dequantize(u, s, 8, CHUNK)
        assert not bool(torch.isfinite(s[0])) and not bool(torch.isfinite(y[:CHUNK]).any())
        assert bool(torch.isfinite(y[CHUNK:]).all())


def test_wire_bytes_by_hand():
    cfg = CommConfig(strategy="quant", quant_chunk=1024)
    # 10,000 entries on 4 ranks: shards of 2,500 → 3 blocks of 1,024 = 3,072 entries
    assert shard_len(10_000, 4, 1024) == 3072
    assert block_bytes(3072, 8, 1024) == 3072 + 12
    plan = Quant.wire(cfg, 10_000, 4)
    assert [c.op for c in plan] == ["alltoall", "allgather"]
    # each phase: 3 of the 4 blocks leave the rank
    assert bytes_sent(plan, 4) == 2 * 3 * 3084
    four = Quant.wire(CommConfig(strategy="quant", quant_chunk=1024, quant_bits=4), 10_000, 4)
    assert bytes_sent(four, 4) == 2 * 3 * (1536 + 12)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(30, 50)
        self.b = nn.Linear(50, 40)
        self.c = nn.Linear(40, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.tanh(self.b(torch.tanh(self.a(x)))))


def _flat(ts) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


def _state(strat: Quant, like: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(worker residual, server residual: zero outside this rank's shards), flat in
    parameter order (zeros where none)."""
    out = []
    for store in (strat.worker, strat.server):
        pieces = store.pieces()
        out.append(_flat([pieces.get(id(p), torch.zeros(p.numel())).clone() for p in like]))
    return out[0], out[1]


def _step(net, ddp, strat, rank, t, bad=False):
    g = torch.Generator().manual_seed(100 * rank + t)
    x = torch.randn(8, 30, generator=g)
    ref = copy.deepcopy(net)
    ref.zero_grad(set_to_none=True)
    ref(x).pow(2).sum().backward()
    local = _flat([p.grad for p in ref.parameters()]).double()
    net.zero_grad(set_to_none=True)
    out = ddp(x).pow(2).sum()
    if bad:
        out = out * float("nan")
    out.backward()
    got = _flat([p.grad for p in net.parameters()])
    return local, got


def check_quant(rank: int, world: int) -> dict:
    torch.set_num_threads(1)
    out = {}
    for bits in (8, 4):
        torch.manual_seed(0)
        net = Net()
        cfg = CommConfig(strategy="quant", bucket_cap_mb=0.004, quant_chunk=CHUNK,
                         quant_bits=bits)
        strat = build_strategy(cfg)
        ddp = strat.wrap(net)
        params = list(net.parameters())
        errs, sent = [], []
        for t in range(4):
            w0, s0 = _state(strat, params)
            local, got = _step(net, ddp, strat, rank, t)
            acct = strat.end_step()
            w1, s1 = _state(strat, params)
            mean = local.clone()
            dist.all_reduce(mean)
            mean /= world
            errs.append(float((got.double() - mean).norm() / mean.norm()))
            # mass conservation: (1/p)Σ(g + e − e') + Σ(f − f') is exactly the result
            kept = (local + w0.double() - w1.double()) / world
            dist.all_reduce(kept)
            srv = (s0 - s1).double()
            dist.all_reduce(srv)
            assert float((kept + srv - got.double()).abs().max()) < 1e-5, (bits, t)
            # bytes as the wire description says, for the buckets reduced
            sent.append(acct["bytes_sent"])
            with torch.no_grad():
                for p in params:
                    p.add_(p.grad, alpha=-0.01)
        sizes = [t.numel() for t in strat.server.tensors().values()]
        assert len(sizes) >= 2, "several buckets expected"
        out[bits] = errs
        plan_bytes = sum(bytes_sent(Quant.wire(cfg, n, world), world) for n in sizes)
        assert sent[-1] == plan_bytes, (sent[-1], plan_bytes)
    # a NaN on one rank: every rank's result is non-finite, no residual of it is kept
    torch.manual_seed(0)
    net = Net()
    strat = build_strategy(CommConfig(strategy="quant", bucket_cap_mb=0.004, quant_chunk=CHUNK))
    ddp = strat.wrap(net)
    params = list(net.parameters())
    for t in range(2):
        _step(net, ddp, strat, rank, t)
        strat.end_step()
    w0, s0 = _state(strat, params)
    _, got = _step(net, ddp, strat, rank, 2, bad=rank == world - 1)
    strat.drain()
    assert not bool(torch.isfinite(got).all())
    w1, s1 = _state(strat, params)
    assert torch.equal(w0, w1) and torch.equal(s0, s1)
    strat.on_skipped_step()
    strat.end_step()
    local, got = _step(net, ddp, strat, rank, 3)
    strat.end_step()
    assert bool(torch.isfinite(got).all())
    # state round trip: a second strategy, whose DDP has rebuilt its buckets as the first
    # one's has, continues identically from the saved state (on other buckets the
    # shards differ, and so does the rounding: the residuals then still add up)
    buf = io.BytesIO()
    torch.save(strat.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    torch.manual_seed(0)
    net2 = Net()
    strat2 = build_strategy(CommConfig(strategy="quant", bucket_cap_mb=0.004, quant_chunk=CHUNK))
    ddp2 = strat2.wrap(net2)
    _step(net2, ddp2, strat2, rank, 0)  # DDP rebuilds its buckets after its first step
    strat2.end_step()
    net2.load_state_dict(net.state_dict())
    strat2.load_state_dict(state)
    for t in range(4, 6):
        _, a = _step(net, ddp, strat, rank, t)
        strat.end_step()
        _, b = _step(net2, ddp2, strat2, rank, t)
        strat2.end_step()
        assert torch.equal(a, b)
    return out


@pytest.mark.timeout(180)
@pytest.mark.parametrize("world", [2, 4])
def test_quant_reduces_with_conserved_mass_and_agrees_on_nonfinite(world):
    results = run_distributed(check_quant, world, timeout=150)
    errs = results[0]
    # 8 bits: a few percent of the mean gradient (rounding plus the residuals carried
    # from step to step); 4 bits: several times more
    assert max(errs[8]) < 0.05 and min(errs[8]) > 0
    assert max(errs[4]) < 0.5 and min(errs[4]) > max(errs[8])
