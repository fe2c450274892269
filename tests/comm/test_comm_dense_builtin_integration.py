"""``dense`` without a Python hook (2 gloo processes): DDP's built-in allreduce, bytes
still counted; the trainer's NaN/Inf check and loss need no per-step collective.

* ``dense`` registers no communication hook (``comm.timing=true`` does), asks DDP for
  ``gradient_as_bucket_view``, and counts 2(p-1)/p·n bytes per bucket once per
  synchronising backward (``no_sync`` micro-batches send nothing);
* the trainer under ``dense`` (no collective for the skip decision, loss reduced when a
  row is logged) writes the same losses, per step and in ``metrics.jsonl``, and the same
  weights as under a strategy that agrees with an allreduce every step;
* a rank whose loss is Inf while its gradients are finite makes every rank skip.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import TensorDataset

from scidl.comm import CommConfig, build_strategy
from scidl.comm.accounting import ring_allreduce_bytes
from scidl.comm.dense import DenseAllreduce
from scidl.comm.registry import register_strategy
from scidl.config import load_config
from scidl.runtime.dist import distributed_context
from scidl.testing import run_distributed
from scidl.train.trainer import Trainer
from scidl.workloads import Task


class _DenseAgreeEveryStep(DenseAllreduce):
    """``dense`` as before: the ranks agree on skipping (and the loss) every step."""

    name = "dense_agree_every_step"
    nonfinite_agreed = False


def _net(width: int = 32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, width), nn.Tanh(), nn.Linear(width, 1))


def check_hook_and_bytes(rank: int, world: int) -> dict:
    out = {}
    for timing in (False, True):
        strat = build_strategy(CommConfig(timing=timing, bucket_cap_mb=0.0005))
        ddp = strat.wrap(_net(256))
        x = torch.randn(4, 8)
        per_step = []
        for _ in range(3):
            with ddp.no_sync():  # an accumulation micro-batch: nothing sent
                ddp(x).sum().backward()
            ddp(x).sum().backward()
            per_step.append(strat.end_step())
        log = ddp._get_ddp_logging_data()
        sizes = [int(b) for b in str(log.get("rebuilt_bucket_sizes") or log["bucket_sizes"]).split(",")]
        out[timing] = {"hook": log.get("comm_hook"), "view": log.get("gradient_as_bucket_view"),
                       "steps": per_step, "buckets": sizes, "report": strat.report()}
    return out


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True))


def _task(inf_at: int | None = None) -> Task:
    """Rank 1's loss is +Inf at its ``inf_at``-th call while its gradients stay finite."""
    calls = {"n": 0}

    def loss(m, batch):
        calls["n"] += 1
        value = nn.functional.mse_loss(m(batch[0]), batch[1])
        if dist.get_rank() == 1 and calls["n"] == inf_at:
            value = value + float("inf")  # d(value)/d(params) unchanged: finite
        return value

    return Task(model=_net(), train_data=_data(), loss=loss, evaluate=lambda m, d: {})


def _fit(root: Path, strategy: str, task: Task, *over: str) -> Trainer:
    cfg = load_config("admissions", overrides=[
        "log.tensorboard=false", "log.progress=false", "checkpoint.final=false",
        "train.batch_size=8", "train.max_steps=13", "train.log_every=5", "optim.lr=0.01",
        f"comm.strategy={strategy}", f"log.run_dir={root}", *over])
    with distributed_context() as dctx:
        tr = Trainer(cfg, task, dctx, root)
        tr.fit()
    return tr


def check_trainer(rank: int, world: int, root: str) -> dict:
    register_strategy(_DenseAgreeEveryStep)
    out = {}
    for name in ("dense", _DenseAgreeEveryStep.name):
        tr = _fit(Path(root) / name, name, _task())
        metrics = Path(root) / name / "metrics.jsonl"  # rank 0 writes it (closed after fit)
        rows = [json.loads(line) for line in metrics.read_text().splitlines()] if rank == 0 else []
        out[name] = {"losses": [r["loss"] for r in tr.history],
                     "logged": [(r["step"], r["loss"]) for r in rows if "loss" in r],
                     "weights": torch.cat([p.detach().reshape(-1) for p in tr.model.parameters()])}
    tr = _fit(Path(root) / "inf", "dense", _task(inf_at=3), "train.max_skipped_fraction=0.5")
    out["inf"] = {"skipped": [r["skipped"] for r in tr.history],
                  "weights": torch.cat([p.detach().reshape(-1) for p in tr.model.parameters()])}
    return out


def _all(rank: int, world: int, root: str) -> dict:
    return {"hook": check_hook_and_bytes(rank, world), "trainer": check_trainer(rank, world, root)}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_distributed(_all, 2, str(tmp_path_factory.mktemp("dense")), timeout=170)


@pytest.mark.timeout(200)
def test_dense_installs_no_python_hook_and_counts_bytes(results):
    for r in results:
        plain, timed = r["hook"][False], r["hook"][True]
        assert plain["hook"] is None and plain["view"] == 1  # DDP's built-in allreduce
        assert timed["hook"] is not None and timed["view"] == 0  # comm.timing: the Python hook
        assert len(plain["buckets"]) >= 2, plain["buckets"]
        want = sum(ring_allreduce_bytes(b, 2) for b in plain["buckets"])
        assert want == sum(p.numel() * 4 for p in _net(256).parameters())  # p = 2: n bytes
        for step in (plain["steps"] + timed["steps"])[1:]:  # after DDP's bucket rebuild
            assert step["bytes_sent"] == step["bytes_recv"] == want, step
        assert all(s["calls"] == len(plain["buckets"]) for s in plain["steps"][1:])
        assert "comm_s" not in plain["steps"][-1] and timed["steps"][-1]["comm_s"] > 0
        assert plain["report"]["timed"] is False and plain["report"]["comm_s"] is None
        assert timed["report"]["timed"] is True and timed["report"]["comm_s"] > 0
        assert plain["report"]["bytes_sent"] == timed["report"]["bytes_sent"]


@pytest.mark.timeout(200)
def test_losses_and_weights_match_a_per_step_allreduce(results):
    for r in results:
        lazy, every = r["trainer"]["dense"], r["trainer"][_DenseAgreeEveryStep.name]
        assert lazy["losses"] == every["losses"] and None not in lazy["losses"]
        assert lazy["logged"] == every["logged"]
        assert torch.equal(lazy["weights"], every["weights"])
    assert [s for s, _ in results[0]["trainer"]["dense"]["logged"]] == [5, 10, 13]
    assert results[0]["trainer"]["dense"]["losses"] == results[1]["trainer"]["dense"]["losses"]


@pytest.mark.timeout(200)
def test_an_inf_loss_on_one_rank_with_finite_gradients_is_skipped_everywhere(results):
    for r in results:
        assert r["trainer"]["inf"]["skipped"] == [0, 0, 1] + [0] * 10
    assert torch.equal(results[0]["trainer"]["inf"]["weights"], results[1]["trainer"]["inf"]["weights"])
