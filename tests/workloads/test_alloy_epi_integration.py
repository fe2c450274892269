"""alloy_epi's network path through the trainer on 2 gloo processes: full-batch Adam on
whitened pair-count features reaches the noise floor, like the closed-form fit."""

from __future__ import annotations

import pytest

import scidl

TINY = {"n_species": 3, "supercell": 3, "true_shells": 2, "max_shells": 4,
        "n_train": 150, "n_test": 200}

QUIET = ["log.tensorboard=false", "log.progress=false", "dist.device=cpu",
         "checkpoint.final=false", "checkpoint.every_steps=1000000", "train.eval_every=1000000"]


@pytest.mark.timeout(420)  # generous: the elastic launch is slow on a loaded 2-core machine
def test_alloy_epi_network_path_on_two_processes(tmp_path):
    cfg = scidl.load_config(
        "alloy_epi",
        overrides=["train.epochs=300", *QUIET, f"log.run_dir={tmp_path / 'run'}"],
        extra={"dist": {"nproc": 2}, "task": TINY},
    )
    summary = scidl.run(cfg).summary
    assert summary["world_size"] == 2 and summary["steps"] == 300  # one full batch per epoch
    ev = summary["final_eval"]
    assert ev["bic_best_shells"] == 2 and ev["fit_shells"] == 2
    assert ev["test_rmse_ratio"] < 1.2
    assert ev["bayes_test_rmse_ratio"] < 1.2
