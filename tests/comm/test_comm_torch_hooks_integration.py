"""``torch_fp16`` / ``torch_powersgd`` are torch's hooks, bit for bit, with honest bytes.

One 2-process gloo job: each strategy trains a small MLP for a few SGD steps next to a
DDP model with the same torch hook registered by hand; the parameters must be identical.
The bytes the strategy counts must equal the bytes gloo writes to its sockets
(``/proc/self/io`` ``wchar``, headers aside) and, for PowerSGD, torch's own compression
statistics. A NaN gradient on one rank must reach both ranks; the state round-trips.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd
from torch.nn.parallel import DistributedDataParallel as DDP

from scidl.comm import CommConfig, build_strategy
from scidl.comm.accounting import ring_allreduce_bytes
from scidl.testing import run_distributed

STEPS = 5
HEADER = 48  # gloo's per-message header


def _wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return -1


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 48), nn.Tanh(),
                         nn.Linear(48, 4))


def _batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(8, 32, generator=g), torch.randn(8, 4, generator=g)


def _train(ddp: DDP, strat=None, nan_at: int | None = None) -> list[dict]:
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    out = []
    for step in range(STEPS):
        x, y = _batch(dist.get_rank(), step)
        if nan_at == step and dist.get_rank() == 1:
            x = x * float("nan")
        opt.zero_grad()
        before = _wchar()
        nn.functional.mse_loss(ddp(x), y).backward()
        if strat is not None:
            strat.drain()
        wrote = _wchar() - before
        finite = all(bool(torch.isfinite(p.grad).all()) for p in ddp.parameters())
        if finite:
            opt.step()
        elif strat is not None:
            strat.on_skipped_step()
        row = {"finite": finite, "wrote": wrote}
        if strat is not None:
            row.update(strat.end_step())
        out.append(row)
    return out


def _hand(name: str, rank: int):
    """DDP with torch's hook registered by hand (what a user of torch would write)."""
    if name == "torch_fp16":
        ddp = DDP(_net(), bucket_cap_mb=25)
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
        return ddp, None
    state = psgd.PowerSGDState(process_group=None, matrix_approximation_rank=2,
                               start_powerSGD_iter=2, random_seed=0)
    ddp = DDP(_net(), bucket_cap_mb=1 << 20)
    ddp.register_comm_hook(state, psgd.powerSGD_hook)
    return ddp, state


def _worker(rank: int, world: int) -> dict:
    res: dict = {}
    for name in ("torch_fp16", "torch_powersgd"):
        ref, ref_state = _hand(name, rank)
        _train(ref)
        strat = build_strategy(CommConfig(strategy=name, rank=2))
        ddp = strat.wrap(_net())
        rows = _train(ddp, strat)
        same = all(torch.equal(a, b) for a, b in zip(ref.parameters(), ddp.parameters(),
                                                       strict=True))
        r = {"same": same, "rows": rows, "report": strat.report()}
        if ref_state is not None:
            r["torch_after"] = ref_state.compression_stats()[2]
            # state round trip: a fresh strategy loaded with the state continues identically
            buf = io.BytesIO()  # as a checkpoint: torch.save, read back tensors only
            torch.save(strat.state_dict(), buf)
            buf.seek(0)
            saved = torch.load(buf, weights_only=True)
            twin = build_strategy(CommConfig(strategy=name, rank=2))
            twin_ddp = twin.wrap(copy.deepcopy(ddp.module))
            twin.load_state_dict(saved)
            _train(twin_ddp, twin)
            _train(ddp, strat)
            r["resumed_same"] = all(torch.equal(a, b) for a, b in zip(
                ddp.parameters(), twin_ddp.parameters(), strict=True))
        # a NaN on rank 1 at step 3: every rank sees it, and the run goes on finite
        nan_strat = build_strategy(CommConfig(strategy=name, rank=2))
        r["nan_rows"] = _train(nan_strat.wrap(_net()), nan_strat, nan_at=3)
        res[name] = r
    return res


@pytest.mark.timeout(120)
def test_torch_hooks_match_hand_installed_hooks_and_count_their_bytes():
    res = run_distributed(_worker, 2, timeout=110)
    n = sum(p.numel() for p in _net().parameters())
    for rank, by_name in enumerate(res):
        for name, r in by_name.items():
            assert r["same"], (rank, name)
            for row in r["rows"][1:]:  # after DDP's first (bucket-building) step
                if row["wrote"] >= 0:  # /proc/self/io readable
                    # the payload as counted, plus gloo's headers (as the wire-bytes test)
                    assert row["bytes_sent"] <= row["wrote"] <= \
                        row["bytes_sent"] * 1.01 + 64 * HEADER, (rank, name, row)
            nan = [row["finite"] for row in r["nan_rows"]]
            assert nan == [True, True, True, False, True], (rank, name, nan)
        fp16 = by_name["torch_fp16"]["rows"]
        assert all(row["bytes_sent"] == ring_allreduce_bytes(2 * n, 2) for row in fp16)
        psg = by_name["torch_powersgd"]
        assert psg["resumed_same"], rank
        rows = psg["rows"]
        assert [row["bytes_sent"] for row in rows[:2]] == [ring_allreduce_bytes(4 * n, 2)] * 2
        # compressed steps: ring bytes of torch's own count of entries after compression
        after = psg["torch_after"] / (STEPS - 2)
        for row in rows[2:]:
            assert row["bytes_sent"] == pytest.approx(ring_allreduce_bytes(4 * after, 2), abs=8)
            assert row["bytes_sent"] < 0.5 * ring_allreduce_bytes(4 * n, 2)
