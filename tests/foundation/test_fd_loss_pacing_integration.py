"""Paced loss reductions on 2 gloo processes: the ranks launch at the same steps, fewer
than one per logged row on fast steps, and every row still gets its exact loss."""

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
    x = torch.randn(512, 4)
    task = Task(model=nn.Linear(4, 1), train_data=TensorDataset(x, x[:, :1]),
                loss=lambda m, b: nn.functional.mse_loss(m(b[0]), b[1]), evaluate=lambda m, d: {})
    cfg = load_config("admissions", overrides=[
        "log.tensorboard=false", "log.progress=false", "checkpoint.final=false",
        "train.batch_size=4", "train.max_steps=150", "train.log_every=2", f"log.run_dir={root}"])
    with distributed_context() as dctx:
        tr = Trainer(cfg, task, dctx, Path(root))
        launches: list[int | None] = []
        launch = tr._losses.launch

        def record(step: int | None = None) -> None:
            launches.append(step)
            launch(step)

        tr._losses.launch = record  # type: ignore[method-assign]
        tr.fit()
    rows = [json.loads(line) for line in (Path(root) / "metrics.jsonl").read_text().splitlines()] \
        if rank == 0 else []
    return {"launches": launches, "losses": [r["loss"] for r in tr.history],
            "logged": [(r["step"], r["loss"]) for r in rows if "loss" in r]}


@pytest.mark.timeout(120)
def test_ranks_launch_together_and_every_row_gets_its_loss(tmp_path):
    res = run_distributed(_run, 2, str(tmp_path), timeout=100)
    assert res[0]["launches"] == res[1]["launches"]  # the same steps on both ranks
    paced = [s for s in res[0]["launches"] if s is not None]
    assert len(paced) < 75, paced  # fewer than one per logged row (75 of them)
    assert None not in res[0]["losses"] and res[0]["losses"] == res[1]["losses"]
    logged = res[0]["logged"]
    assert [s for s, _ in logged] == list(range(2, 151, 2))
    assert [v for _, v in logged] == [res[0]["losses"][s - 1] for s, _ in logged]
