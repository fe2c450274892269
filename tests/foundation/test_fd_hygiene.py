"""Project hygiene: the package version from metadata, group-readable results files."""

from __future__ import annotations

import importlib.metadata
import os
import stat

import pytest

import scidl


def test_version_comes_from_package_metadata():
    """Before, ``__version__`` was a hand-typed string next to pyproject's version."""
    assert scidl.__version__ == importlib.metadata.version("scidl")


def test_version_falls_back_when_not_installed(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert scidl.__version__ == "0+unknown"


def test_other_missing_attributes_still_raise():
    with pytest.raises(AttributeError, match="no_such_name"):
        scidl.no_such_name  # noqa: B018


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_are_group_readable(tmp_path, umask_022):
    """Before, mkstemp left config.yaml, summary.json, comm.json, ... at 0600."""
    from scidl.runtime.files import atomic_write_bytes, atomic_write_text

    atomic_write_text(tmp_path / "summary.json", "{}")
    atomic_write_bytes(tmp_path / "sub" / "comm.json", b"{}")
    assert _mode(tmp_path / "summary.json") == 0o644
    assert _mode(tmp_path / "sub" / "comm.json") == 0o644
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["comm.json", "sub", "summary.json"]


def test_atomic_writes_follow_a_stricter_umask(tmp_path):
    from scidl.runtime.files import atomic_write_text

    old = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "private.json", "{}")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "private.json") == 0o600


def test_checkpoint_folders_and_files_are_group_readable(tmp_path, umask_022):
    """Before, the checkpoint folder (from mkdtemp) was 0700."""
    from scidl.train.checkpoint import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "checkpoints", 3, {"state.pt": {"x": 1}})
    assert _mode(ckpt) == 0o755
    assert {p.name: _mode(p) for p in ckpt.iterdir()} == {"state.pt": 0o644, "manifest.json": 0o644}


def test_search_report_files_are_group_readable(tmp_path, umask_022):
    from scidl.search.report import write_csv

    write_csv([{"a": 1}], tmp_path / "trials.csv")
    assert _mode(tmp_path / "trials.csv") == 0o644
    assert (tmp_path / "trials.csv").read_text().splitlines() == ["a", "1"]
