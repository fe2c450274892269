"""Every registered optimizer: state_dict round-trips mid-training and resumes identically."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from scidl.optim import OptimConfig, build_optimizer, build_scheduler, optimizer_names

CASES = {
    "sgd": {}, "adam": {}, "adamw": {"weight_decay": 0.01},
    "lars": {"weight_decay": 1e-4}, "larc": {"weight_decay": 1e-4},
    "lamb": {"weight_decay": 0.01},
    "lbfgs": {"lbfgs_max_iter": 3},
    "anderson": {"aa_base": "sgd", "aa_history": 4, "aa_every": 3},
    "anderson-adam-ma-bf16": {"name": "anderson", "aa_base": "adam", "aa_history": 4,
                              "aa_every": 2, "aa_ma": "on", "aa_ma_window": 3,
                              "aa_history_dtype": "bfloat16",
                              "aa_state_policy": "reset_momentum"},
    "anderson-lamb-safeguard": {"name": "anderson", "aa_base": "lamb", "aa_history": 3,
                                "aa_every": 1, "aa_safeguard": True, "aa_ma": "auto"},
}


def test_cases_cover_every_registered_optimizer():
    assert set(optimizer_names()) <= {c.split("-")[0] for c in CASES}


def _setup(case: str):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1))
    kw = dict(CASES[case])
    name = kw.pop("name", case)
    cfg = OptimConfig(name=name, lr=0.05, warmup_steps=2, schedule="cosine", **kw)
    opt = build_optimizer(model, cfg)
    return model, opt, build_scheduler(opt, cfg, total_steps=20)


def _train(model, opt, sched, steps, start):
    for s in range(start, start + steps):
        gen = torch.Generator().manual_seed(s)
        x, y = torch.randn(16, 3, generator=gen), torch.randn(16, 1, generator=gen)

        def closure(x=x, y=y):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss.detach()

        closure()
        closes = getattr(opt, "requires_closure", False) or isinstance(opt, torch.optim.LBFGS)
        opt.step(closure) if closes else opt.step()
        sched.step()


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_and_identical_resume(case):
    model, opt, sched = _setup(case)
    _train(model, opt, sched, 7, 0)
    buf = io.BytesIO()
    torch.save({"m": model.state_dict(), "o": opt.state_dict(), "s": sched.state_dict()}, buf)
    _train(model, opt, sched, 6, 7)

    model2, opt2, sched2 = _setup(case)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    model2.load_state_dict(ck["m"])
    opt2.load_state_dict(ck["o"])
    sched2.load_state_dict(ck["s"])
    _train(model2, opt2, sched2, 6, 7)
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q), case
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    if hasattr(opt, "counters"):
        assert opt.counters["extrapolations"] + opt.counters["rejected"] > 0
        assert opt2.counters == opt.counters
