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


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """(folder, stdout) of one uninterrupted 8-step run by the CLI, shared: the resume
    test's reference and the kill -9 test's (the settings of _restart_cfg: a checkpoint
    every 3 steps, a metrics row every step)."""
    full = tmp_path_factory.mktemp("cli") / "full"
    out = _scidl("train", "admissions", "--nproc", "2", "--max-steps", "8", "--run-dir", str(full),
                 *[a for a in ARGS if not a.startswith("checkpoint.every_steps=")],
                 "checkpoint.every_steps=3", "train.log_every=1")
    return full, out


@pytest.mark.timeout(400)
def test_train_two_processes_then_resume_by_cli_is_bit_exact(full_run, tmp_path):
    (full, out), part = full_run, tmp_path / "part"
    assert "admissions: mse =" in out and "on 2 process(es)" in out
    # the run folder comes first (known before the processes start), the summary once
    assert out.splitlines()[0] == f"run folder: {full}" and out.count("admissions: mse =") == 1
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


# Attempt k of the restart test kills (SIGKILL, as `kill -9`) rank r at a moment:
# ("step", n): while computing step n; ("save", n): in the middle of writing checkpoint n.
KILLS = {
    0: (1, "step", 2),  # before the first checkpoint (every 3 steps)
    1: (1, "step", 5),  # between the checkpoints of steps 3 and 6
    2: (0, "save", 6),  # rank 0, during the write of checkpoint 6 (state.pt written, not renamed)
}


def _admissions(ctx):
    from scidl.config import load_config as _load
    from scidl.workloads import get_workload

    return get_workload("admissions").build(_load("admissions", overrides=["task.dropout=0.1"]).task_config(), ctx)


def _kill_task(ctx):
    """admissions; on attempt k, KILLS[k] kills one rank (a marker file records it)."""
    import os
    import signal

    from scidl.train import checkpoint as ck

    task = _admissions(ctx)
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if attempt not in KILLS or int(os.environ["RANK"]) != KILLS[attempt][0]:
        return task
    _, moment, n = KILLS[attempt]

    def die():
        (ctx.run_dir / f"killed-{attempt}").write_text(f"{moment} {n}")
        os.kill(os.getpid(), signal.SIGKILL)

    if moment == "step":
        inner, calls = task.loss, {"n": 0}

        def loss(model, batch):
            calls["n"] += 1
            if calls["n"] == n:
                die()
            return inner(model, batch)

        task.loss = loss
    else:
        sha = ck.sha256_file

        def sha256_file(path, *a, **k):
            if f".step_{n:08d}.tmp" in str(path):
                die()
            return sha(path, *a, **k)

        ck.sha256_file = sha256_file
    return task


def _restart_cfg(run_dir, restarts):
    import scidl

    return scidl.load_config("admissions", overrides=[
        "train.max_steps=8", "checkpoint.every_steps=3", "train.batch_size=16", "task.dropout=0.1",
        "train.log_every=1", "log.tensorboard=false", "log.progress=false", "dist.timeout_s=60",
        f"log.run_dir={run_dir}"], extra={"dist": {"nproc": 2, "max_restarts": restarts}})


@pytest.mark.timeout(600)
def test_max_restarts_survives_kill_9_at_every_moment_bit_exact(full_run, tmp_path):
    """kill -9 of a rank before the first checkpoint, between checkpoints and during a
    checkpoint write (three attempts in a row): the run finishes, its weights equal an
    uninterrupted run's (the CLI's full_run, same settings) bit for bit, and every step
    has exactly one metrics row."""
    import scidl

    ref, killed = full_run[0], tmp_path / "killed"
    result = scidl.run(_restart_cfg(killed, len(KILLS)), task_factory=_kill_task)
    assert sorted(p.name for p in killed.glob("killed-*")) == [f"killed-{k}" for k in KILLS]
    assert result.summary["steps"] == 8
    a, b = _final_weights(ref), _final_weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 9))
    ref_rows = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows if "loss" in r] == [r["loss"] for r in ref_rows if "loss" in r]
