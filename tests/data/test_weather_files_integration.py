"""weather_seg from netCDF files: written by `scidl data write-weather`, trained with
workers, resumed bit-exact; `scidl data inspect` on them."""

import json
from pathlib import Path

import pytest
import torch

from scidl.cli import main
from scidl.config import load_config
from scidl.runtime.dist import distributed_context
from scidl.runtime.seed import seed_everything
from scidl.train.api import build_task
from scidl.train.trainer import Trainer
from scidl.workloads import BuildContext
from scidl.workloads.weather_seg.files import CHANNELS, write_weather_files

pytest.importorskip("h5py", reason="h5py is not installed (pip install scidl[hdf5])")

QUIET = ["log.tensorboard=false", "log.progress=false", "log.pictures=false"]


@pytest.fixture(scope="module")
def weather_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("weather") / "nc"
    write_weather_files(root, n_train=16, n_val=4, size=16, samples_per_file=4, fmt="nc")
    return root


def _cfg(run_dir, data_dir, *over):
    return load_config("weather_seg", overrides=[
        *QUIET, f"log.run_dir={run_dir}", f"task.data_dir={data_dir}", "task.base=4",
        "train.batch_size=4", "train.num_workers=2", "optim.schedule=cosine", *over])


class _CrashAt:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, row):
        if trainer.step == self.step:
            raise RuntimeError("simulated crash")


def _train(cfg, callbacks=(), resume=False):
    with distributed_context(device="cpu") as dctx:
        task = build_task(cfg, BuildContext(seed=cfg.train.seed), None)
        seed_everything(cfg.train.seed + 1 + dctx.rank)
        tr = Trainer(cfg, task, dctx, Path(cfg.log.run_dir), callbacks)
        if resume:
            tr.resume()
        tr.fit()
        return tr


@pytest.mark.timeout(120)
def test_files_run_with_workers_resumes_bit_exact(tmp_path, weather_dir):
    """N steps in one go == k steps, crash, resume to N (num_workers=2, 4 steps per epoch:
    the checkpoint at step 5 is mid-epoch, the run crosses an epoch end after it)."""
    over = ["train.max_steps=7", "checkpoint.every_steps=5", "checkpoint.best=false",
            "train.persistent_workers=true", "train.eval_every=100"]
    full = _train(_cfg(tmp_path / "full", weather_dir, *over))
    first_conv = next(m for m in full.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == len(CHANNELS)  # all 16 channels of the files
    cfg = _cfg(tmp_path / "crash", weather_dir, *over)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(cfg, callbacks=[_CrashAt(6)])
    resumed = _train(cfg, resume=True)
    assert resumed.step == 7
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_cli_write_inspect_and_errors(tmp_path, weather_dir, capsys):
    assert main(["data", "inspect", str(weather_dir / "train"), "--seconds", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "4 source(s), hdf5" in out
    assert "fields   float32  4x16x16x16" in out and "chunks 1x16x16x16, uncompressed" in out
    assert "labels   uint8" in out and "MB/s" in out
    meta = json.loads((weather_dir / "meta.json").read_text())
    assert meta["channels"] == list(CHANNELS) and len(CHANNELS) == 16
    for argv, msg in ((["data", "inspect", str(tmp_path / "missing")], "no such file"),
                      (["data", "inspect", str(weather_dir / "meta.json")], "unknown data format"),
                      (["data", "write-weather", str(weather_dir)], "is not empty"),
                      (["train", "weather_seg", f"task.data_dir={tmp_path}"], "write-weather")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err


@pytest.mark.timeout(120)
def test_files_run_reading_in_a_thread_resumes_bit_exact(tmp_path, weather_dir):
    """data.read_ahead=thread: the same weights as the uninterrupted run after a resume."""
    over = ["train.max_steps=7", "checkpoint.every_steps=5", "checkpoint.best=false",
            "train.num_workers=0", "data.read_ahead=thread", "train.eval_every=100"]
    full = _train(_cfg(tmp_path / "full", weather_dir, *over))
    cfg = _cfg(tmp_path / "crash", weather_dir, *over)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(cfg, callbacks=[_CrashAt(6)])
    resumed = _train(cfg, resume=True)
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(Exception, match=r"data.read_ahead=thread .* needs train.num_workers=0 \(got 2\)"):
        _cfg(tmp_path / "x", weather_dir, "data.read_ahead=thread")
