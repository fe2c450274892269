"""The summary's step time is the mean (periodic slow steps count), the median is kept too."""

import statistics
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from scidl.config import load_config
from scidl.runtime.dist import distributed_context
from scidl.train.trainer import Trainer, step_timing
from scidl.workloads import Task

SLOW_S = 0.06


def _periodically_slow_task():
    """Every 3rd loss evaluation sleeps (like an extrapolation every k steps)."""
    calls = [0]
    x, y = torch.randn(80, 4), torch.randn(80, 1)
    mse = nn.functional.mse_loss

    def loss(m, b):
        calls[0] += 1
        if calls[0] % 3 == 0:
            time.sleep(SLOW_S)
        return mse(m(b[0]), b[1])

    return Task(model=nn.Linear(4, 1), train_data=TensorDataset(x, y), loss=loss,
                evaluate=lambda m, d: {}, val_data=None)


@pytest.mark.timeout(60)
def test_summary_step_time_is_mean_not_median(tmp_path):
    cfg = load_config("admissions", overrides=[
        "log.tensorboard=false", "log.progress=false", "checkpoint.final=false",
        "train.batch_size=8", "train.epochs=2", "optim.name=sgd", f"log.run_dir={tmp_path}"])
    with distributed_context("cpu", "gloo") as dctx:
        tr = Trainer(cfg, _periodically_slow_task(), dctx, Path(tmp_path))
        s = tr.fit()
    assert s["steps"] == 20 and s["steps_per_epoch"] == 10
    after_warmup = tr.step_times[1:]
    assert s["step_time_s"] == pytest.approx(statistics.mean(after_warmup))
    assert s["step_time_median_s"] == pytest.approx(statistics.median(after_warmup))
    # 6 of the 19 timed steps sleep: the mean carries that work, the median does not see it
    assert s["step_time_s"] >= 6 * SLOW_S / 19
    # the median is a fast step; the mean is above it by the slow steps' share (6·SLOW/19
    # ≈ 19 ms, less a little spread of the fast steps): no margin that a faster step erodes
    assert s["step_time_median_s"] < SLOW_S / 2
    assert s["step_time_s"] - s["step_time_median_s"] > 0.8 * 6 * SLOW_S / 19
    assert s["step_time_s"] > 1.5 * s["step_time_median_s"]
    assert s["samples_per_s"] == pytest.approx(s["global_batch_size"] / s["step_time_s"])
    assert s["epoch_time_s"] == pytest.approx(10 * s["step_time_s"])
    assert s["wall_s_per_epoch"] == pytest.approx(s["wall_s"] / 2)


def test_step_timing_leaves_out_the_warmup_step():
    t = step_timing([5.0, 1.0, 1.0, 4.0], steps_per_epoch=2, wall=12.0)
    assert t == {"step_time_s": 2.0, "step_time_median_s": 1.0, "epoch_time_s": 4.0,
                 "wall_s_per_epoch": 6.0}
