"""Atomic, hashed, resumable checkpoints.

A checkpoint is a folder ``checkpoints/step_00000123/`` holding ``state.pt`` (model,
optimizer, scheduler, progress), ``ranks.pt`` (every rank's RNG and strategy state) and
``manifest.json`` (SHA-256 and size of each file). It is written into a temporary folder,
every file fsync'ed, and renamed into place in one step, so a crash never leaves a
half-written checkpoint where a good one was. Loading verifies the manifest; a truncated
or corrupted checkpoint is reported and the previous good one is used.
Files are read with ``torch.load(weights_only=True)``: no arbitrary code runs on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

MANIFEST = "manifest.json"
PREFIX = "step_"


class CheckpointError(RuntimeError):
    """No usable checkpoint could be found or a checkpoint failed verification."""


# ----------------------------------------------------------------------- atomic files


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via temp file → fsync → rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------ checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint on disk."""

    path: Path
    step: int

    def load(self, name: str = "state.pt") -> Any:
        return torch.load(self.path / name, map_location="cpu", weights_only=True)


def step_dir(root: Path, step: int) -> Path:
    return root / f"{PREFIX}{step:08d}"


def save_checkpoint(root: Path, step: int, files: dict[str, Any], keep: int = 3) -> Path:
    """Write ``{filename: object}`` as checkpoint ``step`` under ``root``; prune old ones.

    Call on one rank only (the trainer gathers every rank's state to rank 0 first).
    """
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    try:
        manifest: dict[str, Any] = {"step": step, "files": {}}
        for name, obj in files.items():
            p = tmp / name
            with open(p, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            manifest["files"][name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        if final.exists():  # re-saving the same step (e.g. final == periodic): replace
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(f".{PREFIX}*.tmp-*"):  # left by a crash mid-write
        shutil.rmtree(stale, ignore_errors=True)


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders under ``root``, oldest first (unverified)."""
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
    return sorted(dirs, key=lambda p: p.name)


def verify_checkpoint(path: Path) -> str | None:
    """Return None if ``path`` is intact, else a one-line reason."""
    mf = path / MANIFEST
    if not mf.is_file():
        return "no manifest (incomplete write)"
    try:
        manifest = json.loads(mf.read_text())
        entries = manifest["files"]
    except (ValueError, KeyError) as e:
        return f"unreadable manifest ({e})"
    for name, meta in entries.items():
        f = path / name
        if not f.is_file():
            return f"missing file {name}"
        if f.stat().st_size != meta["bytes"]:
            return f"{name} has {f.stat().st_size} bytes, manifest says {meta['bytes']} (truncated?)"
        if sha256_file(f) != meta["sha256"]:
            return f"{name} fails its SHA-256 check (corrupted)"
    return None


def latest_good_checkpoint(root: Path, warn: bool = True) -> Checkpoint | None:
    """The newest checkpoint that passes verification; bad ones are reported and skipped."""
    for path in reversed(list_checkpoints(root)):
        reason = verify_checkpoint(path)
        if reason is None:
            return Checkpoint(path, int(path.name[len(PREFIX):]))
        if warn:
            warnings.warn(
                f"checkpoint {path} is unusable: {reason}; trying the previous one",
                stacklevel=2,
            )
    return None


def iter_good_checkpoints(root: Path) -> Iterable[Checkpoint]:
    for path in reversed(list_checkpoints(root)):
        if verify_checkpoint(path) is None:
            yield Checkpoint(path, int(path.name[len(PREFIX):]))
