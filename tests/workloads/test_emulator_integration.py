"""emulator under DDP on 2 gloo processes: the regime networks get the exact mean gradient
even when one rank's batch holds no upper-atmosphere layer, and replicas stay identical."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from scidl.testing import run_distributed

TINY = dict(n_lines=16, n_wavenumbers=128, n_bands=4, n_train=4, n_val=2,
            layers_per_column=10, lut_shape=(3, 3, 3, 3), hidden=[8], time_columns=0)


def _worker(rank: int, world: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    from scidl.workloads import BuildContext, get_workload
    from scidl.workloads.emulator.workload import EmulatorConfig

    torch.manual_seed(0)
    task = get_workload("emulator").build(EmulatorConfig(**TINY), BuildContext(seed=0))
    x, y = task.train_data.tensors
    lower = x[:, 0] >= task.model.split_log_p
    # rank 1 sees lower-atmosphere layers only: nets[1] gets no sample there
    shards = [torch.arange(len(x))[::2][:8], torch.nonzero(lower)[:8, 0]]
    local = copy.deepcopy(task.model)
    expected = [torch.zeros_like(p) for p in local.parameters()]
    for idx in shards:
        local.zero_grad()
        task.loss(local, (x[idx], y[idx])).backward()
        for e, p in zip(expected, local.parameters(), strict=True):
            e += p.grad / world
    ddp = DDP(task.model)
    idx = shards[rank]
    task.loss(ddp, (x[idx], y[idx])).backward()
    grads = [p.grad.clone() for p in ddp.parameters()]
    opt = torch.optim.Adam(ddp.parameters(), lr=1e-2)
    for _ in range(3):
        opt.step()
        opt.zero_grad()
        task.loss(ddp, (x[idx], y[idx])).backward()
    return {"grads": [g.numpy() for g in grads], "expected": [e.numpy() for e in expected],
            "params": [p.detach().numpy().copy() for p in ddp.parameters()]}


@pytest.mark.timeout(120)
def test_emulator_ddp_gradient_and_replicas():
    out = run_distributed(_worker, 2)
    for r in out:
        for g, e in zip(r["grads"], r["expected"], strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)
    for a, b in zip(out[0]["params"], out[1]["params"], strict=True):
        np.testing.assert_array_equal(a, b)
