"""``scidl infer``: the best weights on 1 and 2 processes equal calling the model directly;
fallback to the newest checkpoint; pipeline stages assembled; bad input is one line, exit 2."""

import shutil

import numpy as np
import pytest
import torch

from scidl.cli import main
from scidl.config import load_config, save_config
from scidl.train import checkpoint as ckpt
from scidl.train.api import build_task
from scidl.workloads import BuildContext

TRAIN = ["train", "admissions", "--max-steps", "12", "-q", "task.n_rows=64", "train.batch_size=8",
         "train.eval_every=4", "checkpoint.every_steps=4", "log.tensorboard=false"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    assert main([*TRAIN, f"log.run_dir={root / 'run'}"]) == 0
    return root / "run"


def _direct(run_dir, state, x):
    """What a user would write: build the model from config.yaml, load the weights, call it."""
    cfg = load_config(None, run_dir / "config.yaml")
    model = build_task(cfg, BuildContext(seed=cfg.train.seed), None).model
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _inputs(tmp_path, n=23):
    x = np.random.default_rng(0).standard_normal((n, 7)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    return x


def test_infer_on_one_and_two_processes_equals_the_model(run_dir, tmp_path, capsys):
    x = _inputs(tmp_path)
    best = ckpt.latest_best(run_dir / "checkpoints")
    assert best is not None
    want = _direct(run_dir, best.load(), x)
    assert main(["infer", str(run_dir), "--input", str(tmp_path / "x.npy"),
                 "--output", str(tmp_path / "one.npy"), "--batch-size", "5"]) == 0
    assert f"best model (mse {best.value:.4g} at step {best.step})" in capsys.readouterr().out
    np.testing.assert_allclose(np.load(tmp_path / "one.npy"), want, rtol=0, atol=1e-6)
    np.savez(tmp_path / "x.npz", features=x)
    assert main(["infer", str(run_dir), "--input", str(tmp_path / "x.npz"),
                 "--output", str(tmp_path / "two.npz"), "--nproc", "2", "--batch-size", "4"]) == 0
    with np.load(tmp_path / "two.npz") as z:
        np.testing.assert_allclose(z["outputs"], want, rtol=0, atol=1e-6)


def test_infer_falls_back_to_the_newest_checkpoint(run_dir, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    for p in ckpt.list_best(copy / "checkpoints"):
        shutil.rmtree(p)
    x = _inputs(tmp_path)
    newest = ckpt.latest_good_checkpoint(copy / "checkpoints")
    want = _direct(copy, newest.load()["model"], x)
    assert main(["infer", str(copy), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")]) == 0
    assert f"newest checkpoint (step {newest.step}" in capsys.readouterr().out
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=0, atol=1e-6)


def test_infer_assembles_pipeline_stages(tmp_path):
    """A pipelined run's checkpoint holds one stage per rank part; infer joins them."""
    run = tmp_path / "pipe"
    run.mkdir()
    cfg = load_config("admissions", overrides=["parallel.pipeline_stages=2", "task.n_rows=64",
                                               f"log.run_dir={run}"])
    save_config(cfg, run / "config.yaml")
    torch.manual_seed(3)
    full = build_task(cfg, BuildContext(seed=5), None).model.state_dict()
    keys = list(full)
    half = len(keys) // 2
    parts = [{k: full[k] for k in keys[:half]}, {k: full[k] for k in keys[half:]}]
    ckpt.save_checkpoint(run / "checkpoints", 3, {
        ckpt.SHARED_FILE: {"model": None, "optimizer": None},
        ckpt.rank_file(0): {"model": parts[0]}, ckpt.rank_file(1): {"model": parts[1]}})
    x = _inputs(tmp_path)
    assert main(["infer", str(run), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), _direct(run, full, x), rtol=0, atol=1e-6)


def _one_line_exit_2(capsys, argv, expect):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scidl: error:") and expect in err[0], err


def test_infer_bad_inputs_are_one_line_exit_2(run_dir, tmp_path, capsys):
    _inputs(tmp_path)
    base = ["infer", str(run_dir), "--output", str(tmp_path / "y.npy")]
    _one_line_exit_2(capsys, [*base, "--input", str(tmp_path / "missing.npy")], "no such file")
    np.save(tmp_path / "wide.npy", np.zeros((4, 9), np.float32))
    _one_line_exit_2(capsys, [*base, "--input", str(tmp_path / "wide.npy")],
                     "has shape (4, 9); the model expects (N, 7)")
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 7)), b=np.zeros((2, 7)))
    _one_line_exit_2(capsys, [*base, "--input", str(tmp_path / "two.npz")], "name one with --dataset")
    _one_line_exit_2(capsys, [*base, "--input", str(tmp_path / "two.npz"), "--dataset", "c"],
                     "no array 'c'")
    (tmp_path / "x.csv").write_text("1,2")
    _one_line_exit_2(capsys, [*base, "--input", str(tmp_path / "x.csv")], "unknown format")
    empty = tmp_path / "fresh"
    empty.mkdir()
    shutil.copy(run_dir / "config.yaml", empty / "config.yaml")
    _one_line_exit_2(capsys, ["infer", str(empty), "-i", str(tmp_path / "x.npy"), "-o",
                              str(tmp_path / "y.npy")], "no usable checkpoint")
    _one_line_exit_2(capsys, ["infer", str(tmp_path / "nowhere"), "-i", str(tmp_path / "x.npy"),
                              "-o", str(tmp_path / "y.npy")], "no such run folder")
    assert not (tmp_path / "y.npy").exists()


def test_infer_hdf5_round_trip(run_dir, tmp_path):
    h5py = pytest.importorskip("h5py")
    x = _inputs(tmp_path)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("inputs", data=x)
        f.create_dataset("other", data=x[:2])
    assert main(["infer", str(run_dir), "-i", str(tmp_path / "x.h5"), "--dataset", "inputs",
                 "-o", str(tmp_path / "y.h5")]) == 0
    best = ckpt.latest_best(run_dir / "checkpoints")
    with h5py.File(tmp_path / "y.h5", "r") as f:
        np.testing.assert_allclose(f["outputs"][()], _direct(run_dir, best.load(), x), atol=1e-6)
