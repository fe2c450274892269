"""Atomic, hashed, resumable checkpoints.

A checkpoint is a folder ``checkpoints/step_00000123/`` holding ``state.pt`` (model,
optimizer, scheduler, progress), ``ranks.pt`` (every rank's RNG and strategy state) and
``manifest.json`` (SHA-256 and size of each file). It is written into a temporary folder,
every file fsync'ed, and renamed into place in one step, so a crash never leaves a
half-written checkpoint where a good one was. Loading verifies the manifest: the files
the loader needs must be listed, every listed file must match its size and hash, and a
file the manifest does not list makes the checkpoint suspect. A truncated, corrupted or
suspect checkpoint is reported and the previous good one is used; when none is usable,
resuming fails (:func:`resume_plan`) unless the caller allows a fresh start.
A full disk while writing raises :class:`DiskFullError` and keeps the previous checkpoint.
Files are read with ``torch.load(weights_only=True)``: no arbitrary code runs on load.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scidl.runtime.files import atomic_write_bytes as atomic_write_bytes  # re-exported
from scidl.runtime.files import atomic_write_text as atomic_write_text  # re-exported
from scidl.runtime.files import create_temp_dir
from scidl.runtime.files import fsync_dir as _fsync_dir

MANIFEST = "manifest.json"
PREFIX = "step_"
SET_ASIDE = "unusable_"  # prefix of checkpoints moved out of the way (kept for inspection)
REQUIRED: tuple[str, ...] = ("state.pt",)  # what Checkpoint.load needs by default
TRAINER_FILES: tuple[str, ...] = ("state.pt", "ranks.pt")  # what the trainer's resume needs
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class CheckpointError(RuntimeError):
    """No usable checkpoint could be found or a checkpoint could not be written."""


class DiskFullError(CheckpointError):
    """The disk filled up while a checkpoint was written (the previous one is kept)."""


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


def _write_object(path: Path, obj: Any) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(root: Path, step: int, files: dict[str, Any], keep: int = 3) -> Path:
    """Write ``{filename: object}`` as checkpoint ``step`` under ``root``; prune old ones.

    Call on one rank only (the trainer gathers every rank's state to rank 0 first).
    """
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, step)
    tmp = create_temp_dir(root, f".{final.name}.tmp-")
    try:
        manifest: dict[str, Any] = {"step": step, "files": {}}
        for name, obj in files.items():
            p = tmp / name
            _write_object(p, obj)
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
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            raise DiskFullError(disk_full_message(root, final)) from None
        raise
    _prune(root, keep)
    return final


def disk_full_message(root: Path, final: Path) -> str:
    kept = list_checkpoints(root)
    what = f"kept step {int(kept[-1].name[len(PREFIX):])}" if kept else "no earlier checkpoint"
    return f"no space left on device while writing checkpoint {final} ({what})"


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


def verify_checkpoint(path: Path, required: Sequence[str] = REQUIRED) -> str | None:
    """Return None if ``path`` is intact and holds ``required``, else a one-line reason."""
    mf = path / MANIFEST
    if not mf.is_file():
        return "no manifest (incomplete write)"
    try:
        manifest = json.loads(mf.read_text())
        entries = manifest["files"]
        if not isinstance(entries, dict):
            raise ValueError("'files' is not a mapping")
    except (ValueError, KeyError, TypeError) as e:
        return f"unreadable manifest ({e})"
    unlisted = [n for n in required if n not in entries]
    if unlisted:
        return f"manifest does not list {', '.join(unlisted)}"
    extra = sorted(p.name for p in path.iterdir() if p.name != MANIFEST and p.name not in entries)
    if extra:
        return f"{', '.join(extra)} not in the manifest (suspect)"
    for name, meta in entries.items():
        f = path / name
        if not f.is_file():
            return f"missing file {name}"
        try:
            size, digest = int(meta["bytes"]), str(meta["sha256"])
        except (KeyError, TypeError, ValueError):
            return f"unreadable manifest entry for {name}"
        if f.stat().st_size != size:
            return f"{name} has {f.stat().st_size} bytes, manifest says {size} (truncated?)"
        if sha256_file(f) != digest:
            return f"{name} fails its SHA-256 check (corrupted)"
    return None


def _step_of(path: Path) -> int:
    return int(path.name[len(PREFIX):])


def latest_good_checkpoint(root: Path, warn: bool = True,
                           required: Sequence[str] = REQUIRED) -> Checkpoint | None:
    """The newest checkpoint that passes verification; bad ones are reported and skipped."""
    for path in reversed(list_checkpoints(root)):
        reason = verify_checkpoint(path, required)
        if reason is None:
            return Checkpoint(path, _step_of(path))
        if warn:
            warnings.warn(
                f"checkpoint {path} is unusable: {reason}; trying the previous one",
                stacklevel=2,
            )
    return None


def iter_good_checkpoints(root: Path, required: Sequence[str] = REQUIRED) -> Iterable[Checkpoint]:
    for path in reversed(list_checkpoints(root)):
        if verify_checkpoint(path, required) is None:
            yield Checkpoint(path, _step_of(path))


def resume_plan(root: Path, allow_none: bool = False, required: Sequence[str] = REQUIRED,
                warn: bool = True) -> list[Checkpoint]:
    """Checkpoints that verify, newest first, to try in turn when resuming.

    Unusable ones are reported (``warn``). Raises :class:`CheckpointError` when the list
    would be empty, unless ``allow_none`` (then the caller trains from step 0).
    """
    paths = list(reversed(list_checkpoints(root)))
    good, bad = [], []
    for path in paths:
        reason = verify_checkpoint(path, required)
        if reason is None:
            good.append(Checkpoint(path, _step_of(path)))
        else:
            bad.append(f"{path.name}: {reason}")
            if warn:
                warnings.warn(f"checkpoint {path} is unusable: {reason}", stacklevel=2)
    if good or allow_none:
        return good
    hint = "pass --restart-from-scratch to train from step 0"
    if not paths:
        raise CheckpointError(f"no checkpoint to resume from in {root}; {hint}")
    raise CheckpointError(f"none of the {len(paths)} checkpoint(s) in {root} is usable "
                          f"({'; '.join(bad)}); {hint}")


def set_aside_after(root: Path, step: int) -> list[Path]:
    """Rename checkpoints newer than ``step`` to ``unusable_step_...`` (kept, never loaded).

    Called after resuming from ``step``: a newer folder could not be used, and left in
    place it would shadow the run's new checkpoints when old ones are pruned.
    """
    moved = []
    for path in list_checkpoints(root):
        if _step_of(path) > step:
            dest = path.with_name(f"{SET_ASIDE}{path.name}-{uuid.uuid4().hex[:4]}")
            os.replace(path, dest)
            moved.append(dest)
    return moved
