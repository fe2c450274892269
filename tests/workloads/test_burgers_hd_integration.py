"""burgers_hd through the trainer on 2 gloo processes (forward-Laplacian network in DDP)."""

from __future__ import annotations

import pytest
import torch

import scidl

QUIET = ["log.tensorboard=false", "log.progress=false", "dist.device=cpu",
         "checkpoint.final=false", "checkpoint.every_steps=1000000", "train.eval_every=1000000"]


@pytest.mark.timeout(420)  # generous: the elastic launch is slow on a loaded 2-core machine
def test_burgers_hd_trains_on_two_processes(tmp_path):
    from scidl.workloads.base import BuildContext
    from scidl.workloads.burgers_hd.workload import BurgersHD, BurgersHDConfig

    tiny = {"d": 3, "n_collocation": 200, "n_terminal": 32, "n_boundary": 32, "hidden": 16,
            "depth": 2, "n_eval": 256}
    cfg = scidl.load_config(
        "burgers_hd",
        overrides=["train.epochs=60", "optim.lr=1e-2", *QUIET, f"log.run_dir={tmp_path / 'run'}"],
        extra={"dist": {"nproc": 2}, "task": tiny},
    )
    summary = scidl.run(cfg).summary
    assert summary["world_size"] == 2 and summary["steps"] == 60
    torch.manual_seed(cfg.train.seed)
    task = BurgersHD().build(BurgersHDConfig(**tiny), BuildContext(seed=cfg.train.seed))
    untrained = task.evaluate(task.model, task.val_data)["rel_l2"]
    assert summary["final_eval"]["rel_l2"] < 0.3 * untrained
