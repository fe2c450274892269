"""Sharded data parallelism (FSDP2, ``parallel.shard``) trains the same weights as DDP (gloo)."""

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import TensorDataset

from scidl.config import ConfigError, load_config
from scidl.parallel.fsdp import check_shard_layout, fsdp_step_bytes, shard_groups
from scidl.runtime.dist import distributed_context
from scidl.runtime.seed import seed_everything
from scidl.testing import run_distributed
from scidl.train.trainer import Trainer
from scidl.workloads import Task


def _tiny_task():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 6, generator=g), torch.randn(128, 1, generator=g)
    mse = nn.functional.mse_loss
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))
    return Task(model=model, train_data=TensorDataset(x, y), loss=lambda m, b: mse(m(b[0]), b[1]),
                criterion=mse, evaluate=lambda m, d: {"loss": float(mse(m(d.tensors[0]), d.tensors[1]))},
                val_data=TensorDataset(x[:16], y[:16]))


def _nan_on_rank1_call(task, bad_call):
    """``task``'s loss is NaN on rank 1's ``bad_call``-th evaluation (only there)."""
    calls, inner = [0], task.loss

    def loss(model, batch):
        calls[0] += 1
        out = inner(model, batch)
        return out * float("nan") if dist.get_rank() == 1 and calls[0] == bad_call else out

    task.loss = loss
    return task


def _cfg(run_dir, *extra):
    return load_config("admissions", overrides=[
        "log.tensorboard=false", "log.progress=false", "train.max_steps=20", "checkpoint.final=false",
        "checkpoint.best=false", "train.eval_every=10", "optim.name=adam", "optim.lr=0.01",
        "train.global_batch_size=16", "train.clip_grad_norm=1.0", f"log.run_dir={run_dir}", *extra])


def _train(run_dir, *extra, nan_call=None):
    cfg = _cfg(run_dir, *extra)
    with distributed_context() as dctx:
        seed_everything(cfg.train.seed + 1 + dctx.rank)
        task = _tiny_task() if nan_call is None else _nan_on_rank1_call(_tiny_task(), nan_call)
        tr = Trainer(cfg, task, dctx, Path(run_dir))
        tr.fit()
        full = tr.plan.full_state() if hasattr(tr.plan, "full_state") else tr.model.state_dict()
        return tr, {k: v.detach().cpu().clone() for k, v in full.items()}


def _parity(rank, world, root):
    torch.set_num_threads(1)
    accum = ["train.grad_accum=2"] if world == 2 else []  # gradient sync on the last micro-batch only
    _, ddp = _train(f"{root}/ddp", *accum)
    layouts = ["full"] + (["hybrid"] if world == 4 else [])
    out = {}
    for shard in layouts:
        extra = [f"parallel.shard={shard}", *accum] + (["parallel.shard_size=2"] if shard == "hybrid" else [])
        tr, got = _train(f"{root}/{shard}", *extra)
        local = sum(p.to_local().numel() for p in tr.model.parameters())
        total = sum(p.numel() for p in tr.model.parameters())
        diff = max((got[k] - ddp[k]).abs().max().item() for k in ddp) if rank == 0 else 0.0
        out[shard] = {"diff": diff, "local": local, "total": total,
                      "grad_norm": [r.get("grad_norm") for r in tr.history],
                      "eval": tr.last_eval.get("loss")}
    if world == 2:  # a NaN loss on one rank: its gradient shards say so, every rank skips
        tr, _ = _train(f"{root}/nan", "parallel.shard=full", nan_call=3)
        out["nan"] = {"skipped": tr.skipped_steps, "rows": [r["skipped"] for r in tr.history][:3]}
    dist.barrier()
    return out


@pytest.mark.timeout(200)
@pytest.mark.parametrize("world", [2, 4])
def test_fsdp_matches_ddp_after_20_steps(tmp_path, world):
    out = run_distributed(_parity, world, str(tmp_path), timeout=180)
    if world == 2:  # rank 1's 3rd loss (step 3) is NaN: both ranks skip step 3 alone
        assert [o.pop("nan") for o in out] == [{"skipped": 1, "rows": [0, 0, 1]}] * 2
    for shard, r in out[0].items():
        assert r["diff"] < 1e-5, (shard, r["diff"])  # fp32 rounding of a different reduction order
        assert r["eval"] is not None  # rank 0 evaluated the gathered model
        assert all(g is not None and g > 0 for g in r["grad_norm"])
    full = [o["full"] for o in out]
    assert sum(f["local"] for f in full) >= full[0]["total"]  # each rank holds about 1/world
    assert max(f["local"] for f in full) <= full[0]["total"] // world + 16
    if world == 4:  # hybrid: shards of 2 ranks, replicated twice
        assert out[0]["hybrid"]["local"] <= out[0]["hybrid"]["total"] // 2 + 16


def test_shard_layout_checks_name_the_key():
    cfg = _cfg("/tmp/unused", "parallel.shard=full", "comm.strategy=topk")
    with pytest.raises(ConfigError, match="comm.strategy=topk does not apply with parallel.shard=full"):
        check_shard_layout(cfg, 2)
    cfg = _cfg("/tmp/unused", "parallel.shard=full", "parallel.pipeline_stages=2")
    with pytest.raises(ConfigError, match="does not compose with parallel.pipeline_stages=2"):
        check_shard_layout(cfg, 4)
    cfg = _cfg("/tmp/unused", "parallel.shard=hybrid", "parallel.shard_size=3")
    with pytest.raises(ConfigError, match="parallel.shard_size=3 does not divide"):
        check_shard_layout(cfg, 4)
    with pytest.raises(ConfigError, match="needs parallel.shard=hybrid"):
        check_shard_layout(_cfg("/tmp/unused", "parallel.shard_size=2"), 4)
    # 4 kB of fp32 parameters on 4 ranks (ring): 2 all-gathers of 3 x 1 kB, a 3/4 x 4 kB reduce-scatter
    assert fsdp_step_bytes(4096, 4, 1) == 2 * 3 * 1024 + 3 * 1024
    # hybrid 2 x 2, bf16 gradients: 2 x 2 kB gathered, 1 kB reduce-scattered, 1 kB shard all-reduced
    assert fsdp_step_bytes(4096, 2, 2, grad_elem_bytes=2) == 2 * 2048 + 1024 + 1024
    assert shard_groups(8, "hybrid", None, 4) == (2, 4)
    assert shard_groups(8, "full", None, 4) == (1, 8)
    check_shard_layout(_cfg("/tmp/unused", "parallel.shard=full", "comm.strategy=bf16"), 2)
