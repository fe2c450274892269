"""``scidl.setup``: a user's own training loop, data-parallel with a comm strategy."""

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import scidl
from scidl.comm.config import CommConfig
from scidl.testing import run_distributed

EPOCHS, BATCH = 2, 8


def _problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g))
    return model, data, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def _train(model, opt, loader, set_epoch):
    steps = 0
    for epoch in range(EPOCHS):
        if set_epoch:
            loader.sampler.set_epoch(epoch)
        for x, y in loader:
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            steps += 1
    return steps, {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def _loops(rank, world):
    out = {}
    model, data, opt = _problem()  # scidl.setup + the user's loop
    model, opt, loader = scidl.setup(model, opt, DataLoader(data, batch_size=BATCH, shuffle=True))
    assert isinstance(model, DDP) and isinstance(loader.sampler, DistributedSampler)
    out["setup"] = _train(model, opt, loader, set_epoch=False)
    model, data, opt = _problem()  # the same loop written by hand with DDP
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=0)
    out["ddp"] = _train(DDP(model), opt, DataLoader(data, batch_size=BATCH, sampler=sampler),
                        set_epoch=True)
    model, data, opt = _problem()  # PowerSGD installed as the hook, stepped by the optimizer
    model, opt, loader = scidl.setup(model, opt, DataLoader(data, batch_size=BATCH, shuffle=True),
                                     comm=CommConfig(strategy="powersgd", rank=1, warmup_steps=2))
    out["powersgd"] = _train(model, opt, loader, set_epoch=False)
    report = model.comm_strategy.report()
    out["powersgd_info"] = (model.comm_strategy.name, model.comm_strategy.step,
                            report.get("steps", None))
    return out


@pytest.mark.timeout(200)
def test_setup_matches_a_hand_written_ddp_loop_on_two_processes():
    r0, r1 = run_distributed(_loops, 2, timeout=150)
    steps, ref = r0["ddp"]
    assert steps == EPOCHS * 64 // (2 * BATCH)
    for r in (r0, r1):
        got_steps, got = r["setup"]
        assert got_steps == steps
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-6)
    # the replicas agree, and PowerSGD trained something different from dense
    for k in ref:
        assert torch.equal(r0["powersgd"][1][k], r1["powersgd"][1][k])
    assert any(not torch.allclose(r0["powersgd"][1][k], ref[k]) for k in ref)
    name, strategy_steps, _ = r0["powersgd_info"]
    assert name == "powersgd" and strategy_steps == steps  # each optimizer.step ended a step


def test_setup_in_one_plain_process_creates_a_one_member_group():
    model, data, opt = _problem()
    try:
        model, opt, loader = scidl.setup(model, opt, DataLoader(data, batch_size=BATCH))
        assert dist.get_world_size() == 1 and len(loader) == 64 // BATCH
        steps, _ = _train(model, opt, loader, set_epoch=False)
        assert steps == EPOCHS * 64 // BATCH
    finally:
        dist.destroy_process_group()


def test_setup_rejects_a_loader_it_cannot_shard():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield torch.zeros(1)

    from scidl.own_loop import shard_loader

    with pytest.raises(TypeError, match="IterableDataset"):
        shard_loader(DataLoader(Stream()), 0, 1)
