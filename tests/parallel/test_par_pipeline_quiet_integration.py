"""A pipelined ResNet (2 stages) trains without third-party warnings and reduces its
gradients once per step (gloo, CPU)."""

import json

import pytest

from scidl.config import load_config
from scidl.testing import run_distributed
from scidl.train.api import train_process

STEPS = 3


def _worker(rank, world, cfg_dict):
    return train_process(cfg_dict, False, None)


@pytest.mark.timeout(200)
def test_pipelined_resnet_prints_no_ddp_warning_and_reduces_once_per_step(tmp_path, capfd):
    cfg = load_config("digits", overrides=[
        "task.model=resnet", "task.depth=8", "task.width=8", "train.global_batch_size=16",
        "parallel.pipeline_stages=2", "parallel.microbatches=2", f"train.max_steps={STEPS}",
        "train.eval_every=0", "log.tensorboard=false", "log.progress=false",
        "checkpoint.final=false", f"log.run_dir={tmp_path / 'run'}"])
    run_distributed(_worker, 2, cfg.to_dict(), timeout=180)
    err = capfd.readouterr().err  # the children's C++ warnings go to the inherited fd 2
    assert "find_unused_parameters" not in err, err[-2000:]
    comm = json.loads((tmp_path / "run" / "comm.json").read_text())
    # one reduction per step; the shape pass of step 1 used to add a reduction of the
    # first microbatch's gradients (and the count missed the real ones)
    assert comm["steps"] == STEPS and comm["calls"] == STEPS, comm
