"""Shared suite: every registered workload builds, trains 2 steps on 2 gloo processes
through the normal trainer, evaluates, and its loss is finite. Uses each workload's
``smoke`` overrides (a tiny configuration of the real thing). No workload is left out
(``cgan_per_label`` included: its per-label-per-rank runner is a study, its workload is not)."""

import math

import pytest

from scidl.config import load_config
from scidl.testing import run_distributed
from scidl.train.api import train_process
from scidl.workloads import get_workload, workload_names


def _worker(rank, world, cfg_dict):
    return train_process(cfg_dict, False, None)


def _all():
    return workload_names()


@pytest.mark.timeout(300)
def test_every_workload_trains_two_steps_on_two_processes(tmp_path):
    cfgs = []
    for name in _all():
        wl = get_workload(name)
        over = ["train.max_steps=2", "log.tensorboard=false", "log.progress=false",
                "checkpoint.final=false", "train.eval_every=0", f"log.run_dir={tmp_path / name}",
                *wl.smoke]
        cfgs.append(load_config(name, overrides=over).to_dict())
    out = run_distributed(_run_all, 2, cfgs, timeout=280)
    for name, summary in zip(_all(), out[0], strict=True):
        assert summary["steps"] == 2, name
        assert summary["final_loss"] is not None and math.isfinite(summary["final_loss"]), name
        assert summary["headline"] in summary["final_eval"], (name, summary["final_eval"])


def _run_all(rank, world, cfgs):
    return [train_process(c, False, None) for c in cfgs]
