"""Per-optimizer defaults (LAMB's eps) and the warm-up budget warning."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from scidl.config import load_config
from scidl.optim import OptimConfig, build_optimizer
from scidl.optim.schedules import build_scheduler, warmup_budget_message


def _eps(opt: torch.optim.Optimizer) -> float:
    return opt.param_groups[0]["eps"]


def test_lamb_from_the_run_config_gets_its_own_eps_default():
    """Before, the shared optim.eps=1e-8 reached LAMB (paper, timm and the class use 1e-6)."""
    cfg = load_config("admissions", extra={"optim": {"name": "lamb"}})  # what --optim lamb does
    assert cfg.optim.eps is None
    assert _eps(build_optimizer(nn.Linear(3, 2), cfg.optim)) == 1e-6


@pytest.mark.parametrize("name", ["adam", "adamw", "lars", "larc"])
def test_other_optimizers_keep_eps_1e_8(name):
    assert _eps(build_optimizer(nn.Linear(3, 2), OptimConfig(name=name))) == 1e-8


@pytest.mark.parametrize("name", ["lamb", "adam", "lars"])
def test_an_explicit_eps_wins(name):
    cfg = load_config("admissions", overrides=[f"optim.name={name}", "optim.eps=1e-5"])
    assert _eps(build_optimizer(nn.Linear(3, 2), cfg.optim)) == 1e-5


def test_anderson_base_gets_the_base_default():
    opt = build_optimizer(nn.Linear(3, 2), OptimConfig(name="anderson", aa_base="lamb"))
    assert _eps(opt) == 1e-6


def _scheduler(warmup: int, total: int) -> list[warnings.WarningMessage]:
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        build_scheduler(opt, OptimConfig(warmup_steps=warmup), total_steps=total)
    return [w for w in seen if "warmup_steps" in str(w.message)]


@pytest.mark.parametrize(("warmup", "total"), [(50, 100), (100, 30), (10, 10)])
def test_warns_when_warmup_is_at_least_half_of_the_run(warmup, total):
    """Before, a run that was mostly (or all) warm-up trained near chance without a word."""
    seen = _scheduler(warmup, total)
    assert len(seen) == 1
    text = str(seen[0].message)
    assert f"optim.warmup_steps={warmup}" in text and f"{total} optimizer steps" in text
    assert "\n" not in text


@pytest.mark.parametrize(("warmup", "total"), [(0, 1), (0, 100), (49, 100), (10, 1000)])
def test_no_warning_for_a_short_warmup(warmup, total):
    assert _scheduler(warmup, total) == []
    assert warmup_budget_message(OptimConfig(warmup_steps=warmup), total) is None


def test_all_warmup_is_named_as_such():
    msg = warmup_budget_message(OptimConfig(warmup_steps=200), 100)
    assert msg is not None and "is all of the run's 100" in msg
