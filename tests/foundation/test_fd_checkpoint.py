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
