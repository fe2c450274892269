"""Run folders: where a run writes, and the rule that only ``--resume`` writes into an old one.

A new run gets ``<log.root>/<workload>/<UTC timestamp>-<4 hex>`` or the ``log.run_dir`` it
names, which must not already hold a run. A run that fails before training removes the
folder it created when that folder holds nothing but its ``config.yaml`` (and the stall
watchdog's heartbeats), so a bad start leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from scidl.config import ConfigError, RunConfig, folder_in_use
from scidl.runtime.watchdog import HEARTBEAT_DIR


def new_run_dir(cfg: RunConfig) -> Path:
    """``<log.root>/<workload>/<UTC timestamp>-<4 hex>``, created now."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = Path(cfg.log.root) / cfg.workload_label() / f"{stamp}-{uuid.uuid4().hex[:4]}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def _run_dir_key(cfg: RunConfig) -> str:
    return "log.run_dir" if cfg.log.run_dir else "log.root"


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_run_dir(cfg: RunConfig, resume: bool) -> None:
    """The run folder can be used: only a resumed run may write into an existing run."""
    key = _run_dir_key(cfg)
    if resume:
        if not cfg.log.run_dir:
            raise ConfigError("resuming needs log.run_dir (the run folder to continue)")
        path = Path(cfg.log.run_dir)
        if not path.is_dir():
            raise ConfigError(f"cannot resume {path}: not a folder")
        if not _writable(path):
            raise ConfigError(f"cannot resume {path}: the folder is not writable")
        return
    target = Path(cfg.log.run_dir) if cfg.log.run_dir else Path(cfg.log.root) / cfg.workload_label()
    if cfg.log.run_dir and folder_in_use(target):
        if not target.is_dir():
            raise ConfigError(f"invalid value for 'log.run_dir': {target} is a file, not a folder")
        raise ConfigError(
            f"invalid value for 'log.run_dir': {target} already holds a run (not empty); "
            f"continue it with --resume {target}, or choose a new folder"
        )
    base = _nearest_existing(target)
    if not base.is_dir():
        raise ConfigError(f"invalid value for '{key}': {base} is a file, not a folder")
    if not _writable(base):
        raise ConfigError(f"invalid value for '{key}': {base} is not writable")


def _topmost_missing(path: Path) -> Path | None:
    """The highest of ``path`` and its ancestors that does not exist (None: path exists)."""
    path = path.absolute()
    if path.exists():
        return None
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path


def make_run_dir(cfg: RunConfig) -> tuple[Path, Path | None]:
    """Create the run folder; returns it and the topmost folder this call created."""
    explicit = cfg.log.run_dir is not None
    target = Path(str(cfg.log.run_dir)) if explicit else Path(cfg.log.root) / cfg.workload_label()
    top = _topmost_missing(target)
    try:
        path = target if explicit else new_run_dir(cfg)
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"invalid value for '{_run_dir_key(cfg)}': cannot create the run "
                          f"folder ({e.strerror or e})") from None
    return path, (top if explicit else top or path)


def discard_unused_run_dir(path: Path, top: Path | None) -> None:
    """After a failed start: remove what this run created if it holds only its config.yaml.

    ``top`` is the topmost folder the run created (None: the folder existed before, so
    only the run's own files are removed). A folder with metrics or checkpoints is kept.
    """
    if not path.is_dir():
        return
    files = [p for p in path.rglob("*")
             if not p.is_dir() and HEARTBEAT_DIR not in p.relative_to(path).parts]
    if any(p != path / "config.yaml" for p in files):
        return
    shutil.rmtree(path / HEARTBEAT_DIR, ignore_errors=True)
    if top is None:
        (path / "config.yaml").unlink(missing_ok=True)
        for sub in sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()
        return
    shutil.rmtree(path, ignore_errors=True)
    parent = path.parent.absolute()
    top = top.absolute()
    while parent != parent.parent and (parent == top or top in parent.parents):
        with contextlib.suppress(OSError):
            parent.rmdir()  # only if empty
        parent = parent.parent
