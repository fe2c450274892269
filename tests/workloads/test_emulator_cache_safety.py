"""The emulator's dataset cache is loaded as tensors only: a planted pickle runs no code.

``torch.load`` without ``weights_only=True`` unpickles arbitrary objects whenever
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set (users set it to read old checkpoints), and on
torch before 2.6; a cache file in a shared data folder could then run code on load.
"""

from __future__ import annotations

import pickle

import pytest
import torch

from scidl.workloads.emulator.workload import EmulatorConfig, _dataset_key, make_emulator_data


class _Planted:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path(MARK).touch()".replace("MARK", repr(str(_Planted.mark))),))


def test_planted_cache_file_is_refused_not_executed(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    cfg = EmulatorConfig()
    _Planted.mark = tmp_path / "RAN"
    torch.save({"x_train": _Planted()}, tmp_path / f"emulator_{_dataset_key(cfg, 0)}.pt")
    with pytest.raises(pickle.UnpicklingError):
        make_emulator_data(cfg, 0, cache=tmp_path)
    assert not _Planted.mark.exists()


def test_genuine_cache_file_still_loads(tmp_path):
    cfg = EmulatorConfig(n_lines=4, n_wavenumbers=32, n_bands=4, n_train=4, n_val=2,
                         layers_per_column=2)
    first = make_emulator_data(cfg, 0, cache=tmp_path)
    again = make_emulator_data(cfg, 0, cache=tmp_path)  # from the cache file
    assert len(list(tmp_path.glob("emulator_*.pt"))) == 1
    assert torch.equal(first["tau_val"], again["tau_val"])
    assert again["lbl_s_per_layer"] == first["lbl_s_per_layer"]
