"""geneexpr_ans through the trainer on 2 gloo processes (tiny generator): a sigmoid latent
node ranked first by SNS separates the easy pair."""

from __future__ import annotations

import pytest

import scidl

TINY = {"n_tissues": 3, "n_genes": 300, "per_class": 30, "n_programs": 10,
        "genes_per_program": 30, "latent": 8, "hidden": 64}

QUIET = ["log.tensorboard=false", "log.progress=false", "dist.device=cpu",
         "checkpoint.final=false", "checkpoint.every_steps=1000000", "train.eval_every=1000000"]


@pytest.mark.timeout(420)  # generous: the elastic launch is slow on a loaded 2-core machine
def test_geneexpr_ans_trains_on_two_processes(tmp_path):
    cfg = scidl.load_config(
        "geneexpr_ans",
        overrides=["train.epochs=20", "train.batch_size=16", "optim.lr=2e-3",
                   *QUIET, f"log.run_dir={tmp_path / 'run'}"],
        extra={"dist": {"nproc": 2}, "task": TINY},
    )
    summary = scidl.run(cfg).summary
    assert summary["world_size"] == 2
    assert summary["headline"] == "tissue0_vs_tissue1/best_sns_node_auc"
    assert summary["headline_value"] >= 0.9
    assert summary["final_eval"]["tissue0_vs_tissue1/best_sns"] < 0.5
