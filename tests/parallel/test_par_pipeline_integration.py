"""Pipeline stages x replicas give the loss curve of single-process training (gloo, CPU)."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from scidl.config import load_config
from scidl.parallel.blocks import unet_sequential
from scidl.testing import run_distributed
from scidl.train.api import train_process
from scidl.workloads import Task

COMMON = ["log.tensorboard=false", "log.progress=false", "train.max_steps=4", "train.log_every=1",
          "optim.name=sgd", "optim.lr=0.05", "optim.momentum=0.9", "checkpoint.final=false",
          "train.eval_every=4"]


def _denoise_task(ctx):
    """A small U-Net denoising task (images → images), for skip connections across stages."""
    g = torch.Generator().manual_seed(ctx.seed)
    clean = torch.sin(torch.linspace(0, 6, 16))[None, None, :, None] * torch.rand(64, 1, 1, 16, generator=g)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g)
    data = TensorDataset(noisy, clean)
    mse = nn.functional.mse_loss
    return Task(model=unet_sequential(1, 1, width=4, levels=2), train_data=data, val_data=data,
                loss=lambda m, b: mse(m(b[0]), b[1]), criterion=mse,
                evaluate=lambda m, d: {"mse": mse(m(d.tensors[0]), d.tensors[1]).item()}, headline="mse")


def _cfg(run_dir, workload, *over):
    return load_config(workload, overrides=[*COMMON, f"log.run_dir={run_dir}", *over])


def _losses(run_dir):
    rows = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _worker(rank, world, cfg_dict, factory):
    return train_process(cfg_dict, False, factory)


CASES = {
    "resnet_2x2": ("digits", ["task.model=resnet", "task.depth=8", "task.width=8", "train.global_batch_size=32"],
                   ["parallel.pipeline_stages=2", "parallel.microbatches=2"], 4, None),
    "resnet_2x1_gpipe": ("digits", ["task.model=resnet", "task.depth=8", "task.width=8", "train.global_batch_size=32"],
                         ["parallel.pipeline_stages=2", "parallel.microbatches=4", "parallel.schedule=gpipe"], 2, None),
    "unet_2x2": ("admissions", ["train.global_batch_size=16"],
                 ["parallel.pipeline_stages=2", "parallel.microbatches=2"], 4, _denoise_task),
}


def _worker_many(rank, world, jobs):
    """Several trainings in turn in one process group (one process start-up for all)."""
    return [train_process(cfg_dict, False, factory) for cfg_dict, factory in jobs]


@pytest.fixture(scope="module")
def four_rank_runs(tmp_path_factory):
    """{case: (run folder, rank results)} of the 4-process cases, trained in one group."""
    root = tmp_path_factory.mktemp("pipeline4")
    cases = [c for c, (_, _, _, world, _) in CASES.items() if world == 4]
    jobs = [(_cfg(root / c, CASES[c][0], *CASES[c][1], *CASES[c][2]).to_dict(), CASES[c][4])
            for c in cases]
    out = run_distributed(_worker_many, 4, jobs, timeout=400)
    return {c: (root / c, [o[i] for o in out]) for i, c in enumerate(cases)}


@pytest.mark.timeout(450)  # the first 4-process case starts the shared group
@pytest.mark.parametrize("case", list(CASES))
def test_pipeline_matches_single_process(request, tmp_path, case):
    workload, common, hybrid, world, factory = CASES[case]
    single = train_process(_cfg(tmp_path / "single", workload, *common).to_dict(), False, factory)
    if world == 4:
        run_dir, out = request.getfixturevalue("four_rank_runs")[case]
    else:
        run_dir = tmp_path / "hybrid"
        cfg = _cfg(run_dir, workload, *common, *hybrid)
        out = run_distributed(_worker, world, cfg.to_dict(), factory, timeout=280)
    ref, got = _losses(tmp_path / "single"), _losses(run_dir)
    assert len(ref) == len(got) == 4
    assert got == pytest.approx(ref, rel=1e-5, abs=1e-7), (ref, got)
    assert out[0]["final_eval"][out[0]["headline"]] == pytest.approx(single["final_eval"][single["headline"]], rel=1e-4)
    rep = out[0]["pipeline"]
    assert rep["stages"] == 2 and rep["replicas"] == world // 2 and sum(rep["stage_sizes"]) > 2
    assert rep["bubble_fraction"] == pytest.approx(1 / (rep["microbatches"] + 1))
