"""The optimizers through the real trainer: closure path, checkpoint and identical resume."""

from __future__ import annotations

import json

import pytest

from scidl.config import load_config
from scidl.train.api import run


def _cfg(tmp_path, name, epochs, extra=()):
    return load_config("admissions", overrides=[
        f"train.epochs={epochs}", "train.batch_size=40", "task.n_rows=120", "task.hidden=[8]",
        "log.tensorboard=false", "log.progress=false", f"log.run_dir={tmp_path / name}",
        "dist.device=cpu", "optim.name=anderson", "optim.aa_base=sgd", "optim.lr=0.01",
        "optim.aa_history=3", "optim.aa_every=2", "optim.aa_safeguard=true",
        *extra])


@pytest.mark.timeout(120)
def test_safeguarded_anderson_trains_and_resumes_identically(tmp_path):
    full = run(_cfg(tmp_path, "full", 4))
    run(_cfg(tmp_path, "part", 2))
    resumed = run(_cfg(tmp_path, "part", 4), resume=True)
    assert full.summary["steps"] == resumed.summary["steps"] == 8
    assert resumed.summary["final_eval"] == full.summary["final_eval"]
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/mse" in r for r in rows)


@pytest.mark.timeout(120)
def test_trainer_safeguard_is_forward_only_and_matches_full_closures(tmp_path, monkeypatch):
    """Through the trainer, the default safeguard evaluates the plan's forward-only loss
    (no backward beyond the step's own); the earlier full-closure mode gives the same run."""
    from scidl.parallel.ddp import DataParallelPlan

    calls = {"fb": 0}
    fb = DataParallelPlan.forward_backward

    def counting(self, micro):
        calls["fb"] += 1
        return fb(self, micro)

    monkeypatch.setattr(DataParallelPlan, "forward_backward", counting)
    fwd = run(_cfg(tmp_path, "fwd", 3))
    n_fwd, calls["fb"] = calls["fb"], 0
    full = run(_cfg(tmp_path, "full", 3, ["optim.aa_safeguard_eval=full"]))
    assert n_fwd == fwd.summary["steps"] >= 6
    assert calls["fb"] > n_fwd  # the full mode re-ran forward + backward
    assert fwd.summary["final_eval"] == pytest.approx(full.summary["final_eval"], rel=1e-5)


@pytest.mark.timeout(120)
def test_forward_only_safeguard_on_a_pinn_loss(tmp_path):
    """A PINN loss differentiates through its inputs (``Task.loss_needs_grad``): the
    forward-only safeguard keeps autograd on for it and still trains."""
    cfg = load_config("burgers", overrides=[
        "log.tensorboard=false", "log.progress=false", "log.pictures=false",
        f"log.run_dir={tmp_path / 'pinn'}", "dist.device=cpu", "dist.nproc=1",
        "task.n_collocation=64", "task.hidden=8", "task.depth=2", "task.rar_every=0",
        "task.ref_nx=16", "task.ref_nt=5", "task.ref_nodes=101", "train.phases=none",
        "train.epochs=6", "train.eval_every=0", "optim.name=anderson", "optim.aa_base=adam",
        "optim.aa_history=3", "optim.aa_every=2"])
    res = run(cfg)
    assert res.summary["steps"] == 6
    assert res.summary["final_eval"]["rel_l2"] == res.summary["final_eval"]["rel_l2"]  # finite
