"""A workload's own pictures of the trained model (``RUN_DIR/pictures/``): Burgers,
N-body and weather_seg draw theirs after a 3-step one-process run; a failing hook is one
warning and the run still succeeds; ``log.pictures=false`` draws none; the training
report embeds them; the pictures use the best model's weights."""

from __future__ import annotations

import base64
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import scidl
from scidl.scaling.report import render_run
from scidl.train import checkpoint as ckpt
from scidl.train.pictures import picture_model
from scidl.workloads.burgers.workload import Burgers

QUIET = ["train.max_steps=3", "dist.nproc=1", "dist.device=cpu", "dist.threads_per_proc=1",
         "log.tensorboard=false", "log.progress=false", "train.eval_every=1",
         "checkpoint.final=false"]
TINY = {
    "burgers": ["task.n_collocation=64", "task.ref_nx=64", "task.ref_nt=21", "task.ref_nodes=201",
                "task.rar_every=0"],
    "nbody": ["task.hidden=8", "task.n_systems=4", "task.n_steps=40", "task.sample_every=2",
              "task.n_val_systems=2", "train.batch_size=16"],
    "weather_seg": ["task.size=16", "task.n_train=16", "task.n_val=8", "task.base=4",
                    "train.batch_size=4"],
}
PNG = b"\x89PNG\r\n\x1a\n"


def _run(name: str, run_dir: Path, *extra: str) -> dict:
    cfg = scidl.load_config(name, overrides=[*QUIET, *TINY[name], f"log.run_dir={run_dir}", *extra])
    return scidl.run(cfg).summary


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("name", "picture"), [("burgers", "burgers_solution.png"),
                                               ("nbody", "nbody_orbits.png"),
                                               ("weather_seg", "weather_seg_masks.png")])
def test_workload_writes_its_pictures_and_the_report_embeds_them(tmp_path, name, picture):
    run_dir = tmp_path / "run"
    summary = _run(name, run_dir)
    path = run_dir / "pictures" / picture
    assert path.read_bytes().startswith(PNG)
    assert summary["pictures"] == [f"pictures/{picture}"]
    assert summary["pictures_from"] == f"best model, step {summary['best']['step']}"
    page = render_run(run_dir).read_text()
    assert f'alt="{picture}"' in page
    assert base64.b64encode(path.read_bytes()).decode() in page
    assert page.index('alt="train_curves.png"') < page.index(f'alt="{picture}"')  # after the curves


@pytest.mark.timeout(120)
def test_failing_picture_hook_is_one_warning_and_the_run_succeeds(tmp_path, monkeypatch):
    def broken(self, cfg, model, task, out_dir):
        raise RuntimeError("no colour map\nsecond line")

    monkeypatch.setattr(Burgers, "pictures", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = _run("burgers", tmp_path / "run")
    mine = [str(w.message) for w in caught if "pictures" in str(w.message)]
    assert len(mine) == 1 and "\n" not in mine[0], mine
    assert "burgers pictures not drawn (RuntimeError: no colour map)" in mine[0]
    assert summary["steps"] == 3 and "pictures" not in summary
    assert (tmp_path / "run" / "summary.json").is_file()


@pytest.mark.timeout(120)
def test_pictures_off_draws_none(tmp_path):
    summary = _run("burgers", tmp_path / "run", "log.pictures=false")
    assert not (tmp_path / "run" / "pictures").exists()
    assert "pictures" not in summary
    assert "burgers_solution" not in render_run(tmp_path / "run").read_text()


def test_pictures_use_the_best_checkpoint_on_a_copy(tmp_path):
    model = nn.Linear(2, 1)
    best = {k: torch.full_like(v, 7.0) for k, v in model.state_dict().items()}
    ckpt.save_best(tmp_path / "checkpoints", 5, best, "rel_l2", 0.1, False)
    net, source = picture_model(model, tmp_path)
    assert torch.equal(net.weight, torch.full((1, 2), 7.0)) and source == "best model, step 5"
    assert not torch.equal(model.weight, net.weight) and not net.training
    final, source = picture_model(model, tmp_path / "elsewhere")
    assert torch.equal(final.weight, model.weight) and source == "final model"
