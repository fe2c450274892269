"""End to end through the `scidl` command: elastic launch on 2 processes, resume by CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scidl.train.checkpoint import latest_good_checkpoint

ARGS = ["--quiet", "log.tensorboard=false", "train.batch_size=16", "task.dropout=0.1",
        "checkpoint.every_steps=4"]


def _scidl(*args, timeout=200):
    r = subprocess.run([sys.executable, "-m", "scidl", *args], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r.stdout


def _final_weights(run_dir: Path):
    return latest_good_checkpoint(run_dir / "checkpoints").load()["model"]


@pytest.mark.timeout(400)
def test_train_two_processes_then_resume_by_cli_is_bit_exact(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    out = _scidl("train", "admissions", "--nproc", "2", "--max-steps", "8", "--run-dir", str(full), *ARGS)
    assert "admissions: mse =" in out and "on 2 process(es)" in out
    _scidl("train", "admissions", "--nproc", "2", "--max-steps", "4", "--run-dir", str(part), *ARGS)
    _scidl("train", "--resume", str(part), "--nproc", "2", "--max-steps", "8", "--quiet")
    a, b = _final_weights(full), _final_weights(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    summary = json.loads((full / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 8 and summary["headline"] == "mse"
    for name in ("config.yaml", "metrics.jsonl", "comm.json"):
        assert (full / name).is_file()
    rows = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == sorted({r["step"] for r in rows if "loss" in r})


def test_resume_of_a_folder_without_config_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "scidl", "train", "--resume", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no config.yaml" in r.stderr and "Traceback" not in r.stderr
