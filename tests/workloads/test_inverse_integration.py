"""inverse under DDP on 2 gloo processes: the model-constrained loss gives the exact mean
gradient; with the (random) Jacobian penalty the replicas still stay identical."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from scidl.testing import run_distributed


def _worker(rank: int, world: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    from scidl.workloads import BuildContext, get_workload
    from scidl.workloads.inverse.workload import InverseConfig

    cfg = InverseConfig(size=16, n_train=8, n_val=4, base=4, depth=1, mc_weight=0.5)
    torch.manual_seed(0)
    task = get_workload("inverse").build(cfg, BuildContext(seed=0))
    y, u = task.train_data.tensors
    shards = [torch.arange(0, 8, 2), torch.arange(1, 8, 2)]
    local = copy.deepcopy(task.model)
    expected = [torch.zeros_like(p) for p in local.parameters()]
    for idx in shards:
        local.zero_grad()
        task.loss(local, (y[idx], u[idx])).backward()
        for e, p in zip(expected, local.parameters(), strict=True):
            e += p.grad / world
    ddp = DDP(task.model)
    idx = shards[rank]
    task.loss(ddp, (y[idx], u[idx])).backward()
    grads = [p.grad.clone() for p in ddp.parameters()]
    jac_cfg = cfg.model_copy(update={"jacobian_weight": 1e-2})
    jac_task = get_workload("inverse").build(jac_cfg, BuildContext(seed=0))
    torch.manual_seed(rank)  # different perturbations v on each rank
    opt = torch.optim.Adam(ddp.parameters(), lr=1e-2)
    for _ in range(3):
        opt.step()
        opt.zero_grad()
        jac_task.loss(ddp, (y[idx], u[idx])).backward()
    return {"grads": [g.numpy() for g in grads], "expected": [e.numpy() for e in expected],
            "params": [p.detach().numpy().copy() for p in ddp.parameters()]}


@pytest.mark.timeout(120)
def test_inverse_ddp_gradient_and_replicas():
    out = run_distributed(_worker, 2)
    for r in out:
        for g, e in zip(r["grads"], r["expected"], strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)
    for a, b in zip(out[0]["params"], out[1]["params"], strict=True):
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a).all()
