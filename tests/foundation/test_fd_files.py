"""Results files are written whole or not at all (one helper: scidl.runtime.files)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from scidl.config import RunConfig
from scidl.runtime import files


def _fail_replace_of(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the rename into ``name`` fail, as a crash between write and rename would."""
    real = os.replace

    def replace(src: object, dst: object) -> None:
        if Path(str(dst)).name == name:
            raise OSError("interrupted")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    files.atomic_write_text(path, "old")
    _fail_replace_of("summary.json", monkeypatch)
    with pytest.raises(OSError, match="interrupted"):
        files.atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left


def test_failed_write_leaves_no_temp_file(tmp_path):
    with pytest.raises(TypeError):
        files.atomic_write_bytes(tmp_path / "x.bin", "not bytes")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_heartbeat_style_writes_skip_fsync(tmp_path, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    files.atomic_write_text(tmp_path / "beat", "1", durable=False)
    assert calls == [] and (tmp_path / "beat").read_text() == "1"
    files.atomic_write_text(tmp_path / "beat", "2")
    assert len(calls) == 2 and (tmp_path / "beat").read_text() == "2"  # file and folder


def test_checkpoint_module_reuses_the_one_helper():
    from scidl.train import checkpoint

    assert checkpoint.atomic_write_text is files.atomic_write_text
    assert checkpoint.atomic_write_bytes is files.atomic_write_bytes


def test_scaling_json_is_written_atomically(tmp_path, monkeypatch):
    """Before, ``scaling.json`` was written in place: an interrupted ``scidl scale`` left
    a truncated file where the previous results were."""
    from scidl.scaling import measure, profile

    monkeypatch.setattr(profile, "model_grad_sizes", lambda cfg: [400])

    def runner(pc: RunConfig) -> SimpleNamespace:
        run_dir = Path(str(pc.log.run_dir))
        run_dir.mkdir(parents=True, exist_ok=True)
        rows = [{"step": i, "step_time_s": 0.1, "comm_s": 0.01} for i in (1, 2, 3)]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return SimpleNamespace(summary={"world_size": pc.dist.nproc, "global_batch_size": 32,
                                        "batch_size_per_rank": 32 // pc.dist.nproc})

    cfg = RunConfig.model_validate({"workload": "digits", "train": {"batch_size": 32}})
    out = tmp_path / "scale"
    first = measure.run_scaling(cfg, [1], "weak", out, runner=runner)
    old = (out / "scaling.json").read_text()
    assert json.loads(old)["points"][0]["ranks"] == first["points"][0]["ranks"] == 1
    _fail_replace_of("scaling.json", monkeypatch)
    with pytest.raises(OSError, match="interrupted"):
        measure.run_scaling(cfg, [1, 2], "weak", out, runner=runner)
    assert (out / "scaling.json").read_text() == old
    assert not [p.name for p in out.iterdir() if p.name.startswith(".scaling.json")]
