import os
import pickle

import pytest
import torch

from scidl.train import checkpoint as ck


def _save(root, step, value):
    return ck.save_checkpoint(root, step, {"state.pt": {"w": torch.full((4,), float(value))}}, keep=5)


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "a.txt"
    ck.atomic_write_text(p, "one")
    ck.atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert [x.name for x in tmp_path.iterdir()] == ["a.txt"]  # no temp files left


def test_roundtrip_and_manifest(tmp_path):
    path = _save(tmp_path, 7, 1.5)
    assert ck.verify_checkpoint(path) is None
    good = ck.latest_good_checkpoint(tmp_path)
    assert good.step == 7 and torch.equal(good.load()["w"], torch.full((4,), 1.5))


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_manifest"])
def test_corrupt_newest_falls_back_to_previous(tmp_path, damage):
    _save(tmp_path, 1, 1.0)
    newest = _save(tmp_path, 2, 2.0)
    f = newest / "state.pt"
    if damage == "truncate":
        with open(f, "r+b") as fh:
            fh.truncate(f.stat().st_size // 2)
    elif damage == "flip":
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    else:
        (newest / ck.MANIFEST).unlink()
    assert ck.verify_checkpoint(newest) is not None
    with pytest.warns(UserWarning, match="unusable"):
        good = ck.latest_good_checkpoint(tmp_path)
    assert good.step == 1 and good.load()["w"][0].item() == 1.0


def test_keep_prunes_old_and_stale_temp_dirs(tmp_path):
    (tmp_path / ".step_00000009.tmp-abc").mkdir()  # left by a crash mid-write
    for s in range(5):
        ck.save_checkpoint(tmp_path, s, {"state.pt": {"s": s}}, keep=2)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step_00000003", "step_00000004"]
    assert not list(tmp_path.glob(".step_*"))


def test_crash_during_save_keeps_previous(tmp_path, monkeypatch):
    _save(tmp_path, 1, 1.0)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        _save(tmp_path, 2, 2.0)
    monkeypatch.undo()
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step_00000001"]
    assert not list(tmp_path.glob(".step_*"))


class Evil:
    pass


def test_weights_only_load_refuses_arbitrary_objects(tmp_path):
    path = ck.save_checkpoint(tmp_path, 1, {"state.pt": {"x": Evil()}})
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        ck.Checkpoint(path, 1).load()


def test_manifest_listing_no_files_beside_damaged_file_is_unusable(tmp_path):
    path = _save(tmp_path, 1, 1.0)
    (path / ck.MANIFEST).write_text('{"step": 1, "files": {}}')
    (path / "state.pt").write_bytes(b"damaged")
    assert "does not list state.pt" in ck.verify_checkpoint(path)
    assert ck.latest_good_checkpoint(tmp_path, warn=False) is None


def test_required_files_must_be_listed(tmp_path):
    path = _save(tmp_path, 1, 1.0)  # holds state.pt only
    assert ck.verify_checkpoint(path) is None
    assert "does not list ranks.pt" in ck.verify_checkpoint(path, ("state.pt", "ranks.pt"))


def test_file_not_in_manifest_is_suspect(tmp_path):
    path = _save(tmp_path, 1, 1.0)
    (path / "ranks.pt").write_bytes(b"planted")
    assert "ranks.pt not in the manifest" in ck.verify_checkpoint(path)


def test_resume_plan_fails_without_usable_checkpoint_unless_allowed(tmp_path):
    with pytest.raises(ck.CheckpointError, match="no checkpoint to resume from.*--restart-from-scratch"):
        ck.resume_plan(tmp_path)
    assert ck.resume_plan(tmp_path, allow_none=True) == []
    for step in (1, 2):
        with open(_save(tmp_path, step, step) / "state.pt", "r+b") as f:
            f.truncate(10)
    with pytest.raises(ck.CheckpointError, match=r"none of the 2 checkpoint\(s\).*truncated"):
        ck.resume_plan(tmp_path, warn=False)
    assert ck.resume_plan(tmp_path, allow_none=True, warn=False) == []
    good = _save(tmp_path, 3, 3.0)
    assert [c.path for c in ck.resume_plan(tmp_path, warn=False)] == [good]


def test_set_aside_after_renames_newer_checkpoints(tmp_path):
    for step in (1, 2, 3):
        _save(tmp_path, step, step)
    moved = ck.set_aside_after(tmp_path, 1)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step_00000001"]
    assert sorted(p.name[: len("unusable_step_00000002")] for p in moved) == [
        "unusable_step_00000002", "unusable_step_00000003"]


def test_disk_full_is_one_line_and_keeps_previous(tmp_path, monkeypatch):
    import errno

    _save(tmp_path, 1, 1.0)

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck, "_write_object", full)
    with pytest.raises(ck.DiskFullError) as e:
        _save(tmp_path, 2, 2.0)
    msg = str(e.value)
    assert msg.startswith("no space left on device while writing checkpoint ")
    assert msg.endswith("step_00000002 (kept step 1)") and "\n" not in msg
    monkeypatch.undo()
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step_00000001"]
    assert ck.verify_checkpoint(tmp_path / "step_00000001") is None
    assert not list(tmp_path.glob(".step_*"))
