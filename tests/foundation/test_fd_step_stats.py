"""The trainer's per-step NaN/Inf check and backward seed (``scidl.train.step_stats``)."""

import pytest
import torch
from torch import nn

from scidl.train.step_stats import GradCheck, _buckets_or_grads, backward_seed, step_schedule


def test_backward_seed_is_one_or_nan():
    assert backward_seed(torch.tensor(3.5)) is None  # CPU: backward() as usual
    assert backward_seed(torch.tensor(-0.0)) is None
    for bad in (float("nan"), float("inf"), -float("inf")):
        assert torch.isnan(backward_seed(torch.tensor(bad)))


def test_a_nan_seed_makes_every_gradient_nan():
    lin = nn.Linear(3, 2)
    loss = lin(torch.randn(4, 3)).sum() + float("inf")  # gradients alone would be finite
    loss.backward(backward_seed(loss))
    assert all(torch.isnan(p.grad).all() for p in lin.parameters())


def test_constant_schedule_steps_leave_the_same_state_as_torch():
    def sched():
        opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
        fn = lambda s: 1.0 if s < 3 else 0.5  # noqa: E731 - constant, then a drop
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, fn)

    (o1, s1), (o2, s2) = sched(), sched()
    for _ in range(6):
        _step_alike(o1, s1, o2, s2)


def _step_alike(o1, s1, o2, s2):
    """One optimizer step each, torch's scheduler step on the first, ``step_schedule`` on
    the second: the same rate and the same scheduler state after it."""
    o1.step(), o2.step()
    s1.step()
    step_schedule(s2)
    assert o1.param_groups[0]["lr"] == o2.param_groups[0]["lr"]
    a, b = s1.state_dict(), s2.state_dict()
    a.pop("lr_lambdas"), b.pop("lr_lambdas")
    assert a == b


@pytest.mark.parametrize("schedule, warmup", [("constant", 0), ("constant", 3), ("cosine", 2)])
def test_scidl_schedules_step_like_torch_and_skip_only_where_constant(schedule, warmup):
    from scidl.optim import OptimConfig, lr_factor_fn

    cfg = OptimConfig(schedule=schedule, warmup_steps=warmup, lr=0.1)

    def sched():
        opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_factor_fn(cfg, 12))

    (o1, s1), (o2, s2) = sched(), sched()
    calls = []
    f = s2.lr_lambdas[0]
    s2.lr_lambdas[0] = lambda step: calls.append(step) or f(step)
    s2.lr_lambdas[0].constant_from = f.constant_from
    for i in range(10):
        if i == 6:  # someone changes the rate by hand: the schedule sets it back, as torch's
            o1.param_groups[0]["lr"] = o2.param_groups[0]["lr"] = 0.7
        _step_alike(o1, s1, o2, s2)
    if schedule == "constant":  # evaluated up to the end of the warm-up and after the change
        assert f.constant_from == warmup
        assert max(s for s in calls if s != 7) <= max(warmup, 1) and 7 in calls
    else:
        assert f.constant_from is None and len(calls) >= 9


def test_schedule_factor_is_a_function_so_checkpoints_hold_no_config():
    from scidl.optim import OptimConfig, build_scheduler

    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    s = build_scheduler(opt, OptimConfig(lr=0.1), 10)
    assert s.state_dict()["lr_lambdas"] == [None]  # LambdaLR stores callable objects' fields


def _model_with_bucket_views() -> tuple[nn.Module, torch.Tensor]:
    """Gradients laid end to end in one flat buffer, as DDP's ``gradient_as_bucket_view``."""
    m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    flat = torch.zeros(sum(p.numel() for p in m.parameters()))
    start = 0
    for p in m.parameters():
        p.grad = flat[start:start + p.numel()].view_as(p)
        start += p.numel()
    return m, flat


def test_bucket_views_are_checked_with_one_sum_and_every_entry_counts():
    m, flat = _model_with_bucket_views()
    grads = [p.grad for p in m.parameters()]
    (whole,) = _buckets_or_grads(grads)
    assert whole.data_ptr() == flat.data_ptr() and whole.numel() == flat.numel()
    check = GradCheck(m.parameters())
    assert check.check() is False
    for i in range(flat.numel()):
        for bad in (float("nan"), float("inf")):
            flat[i] = bad
            assert check.check() is True, (i, bad)
        flat[i] = 0.0
    assert check.check() is False


def test_separate_and_partial_gradients_are_checked_one_by_one():
    m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    m(torch.randn(5, 3)).sum().backward()
    grads = [p.grad for p in m.parameters()]
    assert [g.data_ptr() for g in _buckets_or_grads(grads)] == [g.data_ptr() for g in grads]
    check = GradCheck(m.parameters())
    assert check.check() is False
    m[1].bias.grad[0] = float("-inf")
    assert check.check() is True
    # a bucket not covered exactly (one parameter without a gradient): each view alone
    m2, flat = _model_with_bucket_views()
    m2[1].bias.grad = None
    parts = _buckets_or_grads([p.grad for p in m2.parameters() if p.grad is not None])
    assert len(parts) == 3
    flat[-1] = float("nan")  # the missing gradient's entries do not count
    assert GradCheck(m2.parameters()).check() is False


def test_sparse_gradients_are_checked_by_their_values():
    emb = nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    check = GradCheck(emb.parameters())
    assert check.check() is False
    emb.weight.grad = torch.sparse_coo_tensor(torch.tensor([[1]]), torch.tensor([[float("nan")] * 3]), (10, 3),
                                             check_invariants=True)
    assert check.check() is True


def _one_rank_group(tmp_path):
    import torch.distributed as dist
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    return dist


def test_pending_losses_launch_without_waiting_and_fill_rows_in_order(tmp_path):
    from scidl.train.step_stats import PendingLosses
    dist = _one_rank_group(tmp_path)
    try:
        p = PendingLosses(replicas=2)  # two replicas' sum: the mean halves one rank's value
        first = [{"step": i, "loss": None} for i in (1, 2)]
        for r, v in zip(first, (4.0, 6.0), strict=True):
            p.add(r, torch.tensor(v))
        p.launch()
        assert p.collect() == 0 and first[0]["loss"] is None  # the newest flight stays out
        second = {"step": 3, "loss": None}
        p.add(second, torch.tensor(8.0))
        p.launch()
        assert p.collect() == 2 and [r["loss"] for r in first] == [2.0, 3.0]
        assert second["loss"] is None and len(p) == 1
        p.resolve()
        assert second["loss"] == 4.0 and len(p) == 0
    finally:
        dist.destroy_process_group()


def test_rows_up_to_a_checkpoint_are_written_before_a_later_crash(tmp_path):
    """The loss of a row is read one logged row later; a checkpoint writes the rows first,
    so a run that dies after it has every row up to the checkpoint (resume continues them)."""
    import json
    from pathlib import Path

    from torch.utils.data import TensorDataset

    import scidl
    from scidl.runtime.dist import distributed_context
    from scidl.train.trainer import Trainer
    from scidl.workloads import Task

    calls = {"n": 0}

    def loss(m, b):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("node lost")
        return nn.functional.mse_loss(m(b[0]), b[1])

    x = torch.randn(64, 4)
    task = Task(model=nn.Linear(4, 1), train_data=TensorDataset(x, x[:, :1]), loss=loss,
                evaluate=lambda m, d: {}, val_data=None)
    cfg = scidl.load_config("admissions", overrides=[
        "train.max_steps=6", "train.batch_size=8", "train.log_every=1", "checkpoint.every_steps=2",
        "log.tensorboard=false", "log.progress=false", f"log.run_dir={tmp_path}"])
    with distributed_context() as dctx:
        tr = Trainer(cfg, task, dctx, Path(tmp_path))
        with pytest.raises(RuntimeError, match="node lost"):
            tr.fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] is not None for r in rows)


def test_remembered_bucket_views_are_dropped_when_a_gradient_changes():
    """The check remembers DDP's bucket views between steps; a gradient that is another
    object (a new tensor, or None) makes it work the buffers out again, so a NaN in a
    gradient that left the bucket is still found and one that was dropped no longer counts."""
    m, flat = _model_with_bucket_views()
    check = GradCheck(m.parameters())
    assert check.check() is False and check._views is not None  # views remembered
    flat[0] = float("nan")
    assert check.check() is True  # same views: the bucket's sum still sees every entry
    flat[0] = 0.0
    last = list(m.parameters())[-1]
    last.grad = torch.full_like(last.grad, float("inf"))  # a gradient of its own now
    assert check.check() is True and check._views is None  # separate tensors: not held
    last.grad = None
    flat[-1] = float("nan")  # the dropped gradient's old bucket entries do not count
    assert check.check() is False


def test_gradients_of_their_own_are_not_held_between_checks():
    m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    m(torch.randn(5, 3)).sum().backward()
    check = GradCheck(m.parameters())
    assert check.check() is False and check._views is None
    m.zero_grad(set_to_none=True)
    m(torch.randn(5, 3)).sum().backward()
    m[0].weight.grad[0, 0] = float("nan")
    assert check.check() is True


def test_pending_losses_space_launches_by_the_agreed_step_time(tmp_path):
    """Each reduction carries the ranks' seconds per step; once collected, launches wait
    about ``min_interval_s`` worth of steps (the same steps on every rank), and the rows'
    losses stay exact."""
    import time

    from scidl.train.step_stats import PendingLosses
    dist = _one_rank_group(tmp_path)
    try:
        p = PendingLosses(replicas=1, min_interval_s=5.0)
        rows = [{"step": s, "loss": None} for s in range(1, 5)]
        p.add(rows[0], torch.tensor(1.0))
        p.launch(1)
        p.collect(wait=True)
        assert p.due(2) and rows[0]["loss"] == 1.0  # no step time known yet: every due row
        time.sleep(0.05)
        for r, v in zip(rows[1:], (2.0, 3.0, 4.0), strict=True):
            p.add(r, torch.tensor(v))
        p.launch(4)  # ≈ 0.017 s per step over steps 1..4
        p.collect(wait=True)
        assert [r["loss"] for r in rows] == [1.0, 2.0, 3.0, 4.0]
        assert not p.due(5) and not p.due(20) and p.due(4 + 301)  # 5 s / ≥ 0.0167 s ≤ 300 steps
        paced = PendingLosses(replicas=1, min_interval_s=0.0)  # pacing off: every due row
        paced.add({"step": 1, "loss": None}, torch.tensor(1.0))
        paced.launch(1)
        paced.collect(wait=True)
        assert paced.due(2)
    finally:
        dist.destroy_process_group()
