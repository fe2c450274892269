"""Throughput with pipeline stages counts the samples of one step once, not once per stage."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from scidl.config import load_config
from scidl.testing import run_distributed
from scidl.train.api import train_process
from scidl.workloads import Task

GLOBAL_BATCH = 16


def _tiny_task(ctx):
    g = torch.Generator().manual_seed(ctx.seed)
    x, y = torch.randn(64, 6, generator=g), torch.randn(64, 1, generator=g)
    mse = nn.functional.mse_loss
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))
    return Task(model=model, train_data=TensorDataset(x, y), loss=lambda m, b: mse(m(b[0]), b[1]),
                criterion=mse, evaluate=lambda m, d: {}, val_data=None)


def _worker(rank, world, cfg_dict):
    return train_process(cfg_dict, False, _tiny_task)


@pytest.mark.timeout(120)
def test_samples_per_s_times_step_time_is_global_batch_with_stages(tmp_path):
    cfg = load_config("admissions", overrides=[
        "log.tensorboard=false", "log.progress=false", "checkpoint.final=false",
        "train.max_steps=4", "train.log_every=1", "optim.name=sgd", "optim.lr=0.01",
        f"train.global_batch_size={GLOBAL_BATCH}", "parallel.pipeline_stages=2",
        "parallel.microbatches=2", f"log.run_dir={tmp_path}"])
    summary = run_distributed(_worker, 2, cfg.to_dict(), timeout=110)[0]
    rows = [json.loads(x) for x in (Path(tmp_path) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "step_time_s" in r]
    assert len(rows) == 4
    for r in rows:  # 2 stages x 1 replica: one step trains on 16 samples, not 32
        assert r["samples_per_s"] * r["step_time_s"] == pytest.approx(GLOBAL_BATCH)
    assert summary["global_batch_size"] == GLOBAL_BATCH
    assert summary["data_parallel_size"] == 1 and summary["world_size"] == 2
    assert summary["samples_per_s"] * summary["step_time_s"] == pytest.approx(GLOBAL_BATCH)
    assert summary["pipeline"]["measured_step_s"] == pytest.approx(summary["step_time_s"])
