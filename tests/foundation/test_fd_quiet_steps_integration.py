"""Steps with nothing to log, evaluate or save take the short path after the step, and
the run logs, evaluates and checkpoints at exactly the steps it did before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from scidl.config import load_config
from scidl.runtime.dist import distributed_context
from scidl.testing import run_distributed
from scidl.train.trainer import Trainer
from scidl.workloads import Task


def _run(rank: int, world: int, root: str) -> dict:
    torch.manual_seed(0)
    x = torch.randn(96, 4)
    evals: list[int] = []
    task = Task(model=nn.Linear(4, 1), train_data=TensorDataset(x, x[:, :1]),
                loss=lambda m, b: nn.functional.mse_loss(m(b[0]), b[1]),
                evaluate=lambda m, d: {"mse": 1.0}, val_data=TensorDataset(x[:8], x[:8, :1]))
    cfg = load_config("admissions", overrides=[
        "log.tensorboard=false", "log.progress=false", "checkpoint.final=false",
        "checkpoint.best=false", "train.batch_size=4", "train.max_steps=23",
        "train.log_every=3", "train.eval_every=4", "checkpoint.every_steps=5",
        f"log.run_dir={root}"])
    with distributed_context() as dctx:
        tr = Trainer(cfg, task, dctx, Path(root))
        saves: list[int] = []
        full: list[int] = []
        evaluate, save, work = tr.evaluate, tr.save, tr._after_step_work

        def ev() -> dict:
            evals.append(tr.step)
            return evaluate()

        def sv() -> None:
            saves.append(tr.step)
            save()

        def wk(*a: object) -> None:
            full.append(tr.step)
            work(*a)

        tr.evaluate, tr.save, tr._after_step_work = ev, sv, wk  # type: ignore[method-assign]
        tr.fit()
    rows = [json.loads(line) for line in (Path(root) / "metrics.jsonl").read_text().splitlines()]
    return {"evals": evals, "saves": saves, "full": full,
            "logged": [r["step"] for r in rows if "loss" in r], "steps": tr.step}


@pytest.mark.timeout(120)
def test_quiet_steps_skip_the_bookkeeping_and_change_nothing(tmp_path):
    (res,) = run_distributed(_run, 1, str(tmp_path), timeout=100)
    assert res["steps"] == 23
    assert res["evals"][:5] == [4, 8, 12, 16, 20]
    assert res["saves"] == [5, 10, 15, 20]
    assert res["logged"] == sorted({*range(3, 24, 3), 4, 8, 12, 16, 20, 23})
    events = {1, *range(3, 24, 3), *range(4, 24, 4), *range(5, 24, 5), 23}
    assert set(res["full"]) == events  # and nothing else: the other steps took the short path
