"""nbody through the trainer on 2 gloo processes: the Hamiltonian kick network (a gradient
computed inside the DDP forward, with a double backward) trains and its kick error falls."""

from __future__ import annotations

import pytest
import torch

import scidl

QUIET = ["log.tensorboard=false", "log.progress=false", "dist.device=cpu",
         "checkpoint.final=false", "checkpoint.every_steps=1000000", "train.eval_every=1000000"]


@pytest.mark.timeout(420)  # generous: the elastic launch is slow on a loaded 2-core machine
def test_nbody_hamiltonian_trains_on_two_processes(tmp_path):
    from scidl.workloads.base import BuildContext
    from scidl.workloads.nbody.workload import NBody, NBodyConfig

    tiny = {"hidden": 16, "n_systems": 8, "n_steps": 60, "sample_every": 2, "n_val_systems": 4}
    cfg = scidl.load_config(
        "nbody",
        overrides=["train.epochs=6", "train.batch_size=32", *QUIET,
                   f"log.run_dir={tmp_path / 'run'}"],
        extra={"dist": {"nproc": 2}, "task": tiny},
    )
    summary = scidl.run(cfg).summary
    assert summary["world_size"] == 2 and summary["steps"] > 0
    torch.manual_seed(cfg.train.seed)
    task = NBody().build(NBodyConfig(**tiny), BuildContext(seed=cfg.train.seed))
    untrained = task.evaluate(task.model, task.val_data)["kick_rel_err"]
    assert summary["final_eval"]["kick_rel_err"] < 0.7 * untrained
