"""Resuming never trusts a checkpoint blindly and never trains from step 0 unasked.

Single process (fast): the run folder logic is the same on N processes.
"""

from __future__ import annotations

import errno
import json

import pytest
import torch

from scidl.cli import main
from scidl.config import load_config
from scidl.train import checkpoint as ck
from scidl.train.api import run
from scidl.train.trainer import CKPT_FILES

QUIET = ["log.tensorboard=false", "log.progress=false", "dist.device=cpu", "train.batch_size=16",
         "checkpoint.every_steps=3", "train.log_every=1", "task.dropout=0.1"]


def _cfg(run_dir, steps):
    return load_config("admissions", overrides=[*QUIET, f"train.max_steps={steps}", f"log.run_dir={run_dir}"])


def _steps(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "loss" in r]


def _weights(run_dir):
    return ck.latest_good_checkpoint(run_dir / "checkpoints", required=CKPT_FILES).load()["model"]


def _corrupt(path):
    data = bytearray((path / "state.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / "state.pt").write_bytes(bytes(data))


def _cli(*args):
    return main(["train", *args, "--quiet"])


@pytest.mark.timeout(120)
def test_resume_with_every_checkpoint_corrupt_fails_unless_restart_from_scratch(tmp_path, capsys):
    part = tmp_path / "part"
    run(_cfg(part, 6))  # checkpoints at 3 and 6
    for path in ck.list_checkpoints(part / "checkpoints"):
        _corrupt(path)
    assert _cli("--resume", str(part), "--max-steps", "8") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none of the 2 checkpoint(s)" in err and "SHA-256" in err
    assert "--restart-from-scratch" in err and "Traceback" not in err
    assert _steps(part) == list(range(1, 7))  # nothing was touched

    assert _cli("--resume", str(part), "--max-steps", "8", "--restart-from-scratch") == 0
    err = capsys.readouterr().err  # the CLI prints warnings as one line each
    assert err.count("scidl: warning: checkpoint") == 2 and "is unusable" in err, err
    assert _steps(part) == list(range(1, 9))  # from step 0, the old rows dropped
    assert [p.name for p in ck.list_checkpoints(part / "checkpoints")] == [
        "step_00000003", "step_00000006", "step_00000008"]
    assert len(list((part / "checkpoints").glob("unusable_step_*"))) == 2  # kept for inspection
    full = tmp_path / "full"
    run(_cfg(full, 8))
    a, b = _weights(full), _weights(part)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_restart_from_scratch_needs_resume(capsys):
    assert _cli("admissions", "--restart-from-scratch") == 2
    assert "only applies with --resume" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_resume_before_the_first_checkpoint_does_not_duplicate_rows(tmp_path, capsys):
    part = tmp_path / "part"
    run(_cfg(part, 2))  # no periodic checkpoint yet; drop the final one: a crash at step 2
    for path in ck.list_checkpoints(part / "checkpoints"):
        import shutil

        shutil.rmtree(path)
    assert _steps(part) == [1, 2]
    assert _cli("--resume", str(part), "--max-steps", "4") == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err
    assert _cli("--resume", str(part), "--max-steps", "4", "--restart-from-scratch") == 0
    assert _steps(part) == [1, 2, 3, 4]


def _rewrite(path, state):
    """Replace state.pt with ``state`` and re-hash it: the checkpoint verifies."""
    torch.save(state, path / "state.pt")
    manifest = json.loads((path / ck.MANIFEST).read_text())
    manifest["files"]["state.pt"] = {"sha256": ck.sha256_file(path / "state.pt"),
                                     "bytes": (path / "state.pt").stat().st_size}
    (path / ck.MANIFEST).write_text(json.dumps(manifest))
    assert ck.verify_checkpoint(path, CKPT_FILES) is None


@pytest.mark.parametrize("damage", ["wrong_keys", "not_a_checkpoint"])
@pytest.mark.timeout(120)
def test_checkpoint_that_verifies_but_fails_to_load_falls_back(tmp_path, damage):
    part, full = tmp_path / "part", tmp_path / "full"
    run(_cfg(part, 6))
    newest = ck.list_checkpoints(part / "checkpoints")[-1]
    state = torch.load(newest / "state.pt", weights_only=True)
    if damage == "wrong_keys":
        state["model"] = {f"renamed.{k}": v for k, v in state["model"].items()}
        _rewrite(newest, state)
    else:
        _rewrite(newest, {"hello": torch.zeros(2)})
    with pytest.warns(UserWarning, match="verifies but cannot be loaded"):
        resumed = run(_cfg(part, 8), resume=True)
    assert resumed.summary["steps"] == 8
    assert _steps(part) == list(range(1, 9))  # resumed at 3: rows 4..6 rewritten once
    run(_cfg(full, 8))
    a, b = _weights(full), _weights(part)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.timeout(120)
def test_full_disk_during_training_is_one_line_and_keeps_previous(tmp_path, monkeypatch, capsys):
    real = ck._write_object

    def write(path, obj):
        if "step_00000006" in str(path.parent):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, obj)

    monkeypatch.setattr(ck, "_write_object", write)
    part = tmp_path / "part"
    assert _cli("admissions", "--run-dir", str(part), "--max-steps", "8", *QUIET) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "no space left on device while writing checkpoint" in err and "(kept step 3)" in err
    assert [p.name for p in ck.list_checkpoints(part / "checkpoints")] == ["step_00000003"]
    assert ck.verify_checkpoint(part / "checkpoints" / "step_00000003", CKPT_FILES) is None
