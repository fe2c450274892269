"""Schedules: warm-up, decays, cyclic restarts and the linear scaling rule."""

from __future__ import annotations

import math

import pytest
import torch

from scidl.optim import OptimConfig, build_scheduler, lr_factor_fn
from scidl.optim.schedules import cycle_end_steps


def test_warmup_then_poly_decay():
    cfg = OptimConfig(schedule="poly", warmup_steps=10, warmup_start_factor=0.1, poly_power=2.0)
    f = lr_factor_fn(cfg, total_steps=110)
    assert f(0) == pytest.approx(0.1)
    assert f(5) == pytest.approx(0.55)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.25)  # (1 - 50/100)^2
    assert f(110) == pytest.approx(0.0)


def test_cosine_floor():
    cfg = OptimConfig(schedule="cosine", min_lr_factor=0.1)
    f = lr_factor_fn(cfg, total_steps=100)
    assert f(0) == pytest.approx(1.0)
    assert f(50) == pytest.approx(0.55)
    assert f(100) == pytest.approx(0.1)


def test_cyclic_restarts_and_snapshot_points():
    cfg = OptimConfig(schedule="cyclic", cycles=4, warmup_steps=0)
    f = lr_factor_fn(cfg, total_steps=100)
    assert [f(s) for s in (0, 25, 50, 75)] == pytest.approx([1.0] * 4)
    assert f(24) == pytest.approx(0.5 * (1 + math.cos(math.pi * 24 / 25)))
    assert cycle_end_steps(cfg, 100) == [25, 50, 75, 100]
    assert cycle_end_steps(OptimConfig(), 100) == [100]


def test_linear_scaling_rule_in_scheduler():
    cfg = OptimConfig(name="sgd", lr=0.1, reference_batch=256, warmup_steps=5)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=cfg.lr)
    sched = build_scheduler(opt, cfg, total_steps=20, global_batch=1024)
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4)  # 0.1 * 1024/256 after warm-up
    # without the global batch the rule is off (factor 1), and building the scheduler warns
    assert lr_factor_fn(cfg, 20)(10) == pytest.approx(1.0)
    with pytest.warns(UserWarning, match="reference_batch"):
        build_scheduler(opt, cfg, total_steps=20)
