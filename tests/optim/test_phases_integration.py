"""2-process gloo tests of ``train.phases`` (Adam then full-batch L-BFGS) and
``train.precision=fp64``: the optimizer switches at the phase boundary, a run resumed
mid-L-BFGS-phase ends bit-exact equal to an uninterrupted one, the L-BFGS phase leaves the
same weights on both ranks, and everything trains in float64."""

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from scidl.config import load_config
from scidl.runtime.dist import distributed_context
from scidl.runtime.seed import seed_everything
from scidl.testing import run_distributed
from scidl.train.api import build_task
from scidl.train.trainer import Trainer
from scidl.workloads import BuildContext

TINY = ["log.tensorboard=false", "log.progress=false", "log.pictures=false",
        "task.n_collocation=64", "task.hidden=8", "task.depth=2", "task.rar_every=0",
        "task.ref_nx=16", "task.ref_nt=5", "task.ref_nodes=101",
        "train.phases=[{optim: adam, steps: 4}, {optim: lbfgs, steps: 4, lbfgs_max_iter: 3}]",
        "optim.schedule=cosine", "train.precision=fp64", "checkpoint.every_steps=2",
        "train.eval_every=0", "train.log_every=1"]


class _Record:
    """Each step's optimizer class and learning rate (and a simulated crash)."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.crash_at = crash_at
        self.seen: list[tuple[int, str, float]] = []

    def on_step_end(self, trainer, row):
        self.seen.append((trainer.step, type(trainer.optimizer).__name__, row["lr"]))
        if trainer.step == self.crash_at:
            raise RuntimeError("simulated crash")


def _train(run_dir, callbacks=(), resume=False):
    cfg = load_config("burgers", overrides=[*TINY, f"log.run_dir={run_dir}"])
    with distributed_context() as dctx:
        task = build_task(cfg, BuildContext(seed=cfg.train.seed), None)
        seed_everything(cfg.train.seed + 1 + dctx.rank)
        tr = Trainer(cfg, task, dctx, Path(run_dir), callbacks)
        if resume:
            tr.resume()
        summary = tr.fit()
        return tr, summary


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _checks(rank, world, root):
    root = Path(root)
    rec = _Record()
    full, summary = _train(root / "full", [rec])
    w = _flat(full.model)
    both = [torch.zeros_like(w) for _ in range(world)]
    dist.all_gather(both, w)
    try:
        _train(root / "resumed", [_Record(crash_at=7)])
    except RuntimeError:
        pass
    dist.barrier()
    resumed, _ = _train(root / "resumed", resume=True)
    return {
        "seen": rec.seen, "ranks_differ": (both[0] - both[1]).abs().max().item(),
        "resume_differs": (w - _flat(resumed.model)).abs().max().item(),
        "dtypes": sorted({str(p.dtype) for p in full.model.parameters()}),
        "phases": summary["phases"], "steps": resumed.step,
    }


@pytest.mark.timeout(240)
def test_phases_switch_resume_bit_exact_ranks_agree_fp64(tmp_path):
    out = run_distributed(_checks, 2, str(tmp_path), timeout=220)
    for r in out:
        names = [name for _, name, _ in r["seen"]]
        assert names == ["Adam"] * 4 + ["LBFGS"] * 4  # the switch at the phase boundary
        assert [lr for s, _, lr in r["seen"] if s > 4] == [1.0] * 4  # L-BFGS: unit step, constant
        assert r["seen"][0][2] > r["seen"][3][2]  # Adam's cosine spans its own 4 steps
        assert r["ranks_differ"] == 0.0  # the L-BFGS line search agreed on both ranks
        assert r["resume_differs"] == 0.0 and r["steps"] == 8  # resumed mid-phase, bit-exact
        assert r["dtypes"] == ["torch.float64"]
        assert [p["optim"] for p in r["phases"]] == ["adam", "lbfgs"]
        assert [p["trained_steps"] for p in r["phases"]] == [4, 4]
    ev = [p["final_eval"]["rel_l2"] for p in out[0]["phases"]]  # rank 0 evaluates
    assert ev[1] < ev[0]  # L-BFGS went on lowering the error
    rows = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [x for x in rows if "loss" in x]
    assert [x["phase"] for x in train_rows] == [0] * 4 + [1] * 4
    assert [x["step"] for x in train_rows] == list(range(1, 9))
