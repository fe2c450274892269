"""Results files written whole or not at all.

Every file SciDL leaves for a reader (``summary.json``, ``scaling.json``, ``config.yaml``,
plots, reports, checkpoint folders) is written to a temporary name in the same folder
and renamed into place, so a reader or a crash never sees half a file: the old content
stays until the new one is complete. Temporary files get the mode ``open()`` would give
(0666 less the umask), so results are group-readable when the user's umask says so.
"""

from __future__ import annotations

import errno
import io
import os
import uuid
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "create_temp_dir",
    "create_temp_file",
    "fsync_dir",
    "save_figure",
]


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders have no fd."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unique_name(directory: Path, prefix: str) -> Path:
    return directory / f"{prefix}{uuid.uuid4().hex[:12]}"


def create_temp_file(directory: Path, prefix: str) -> tuple[int, Path]:
    """A new, exclusively created file in ``directory``: ``(fd open for writing, path)``.

    Unlike ``tempfile.mkstemp`` (always 0600) the file gets the mode ``open()`` would give
    (0666 less the umask), so results renamed into place are readable by the group when
    the user's umask says so.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        path = _unique_name(directory, prefix)
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:  # pragma: no cover - 48 random bits collided
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(directory))  # pragma: no cover


def create_temp_dir(directory: Path, prefix: str) -> Path:
    """A new folder in ``directory`` with the mode ``mkdir`` gives (0777 less the umask)."""
    for _ in range(100):
        path = _unique_name(directory, prefix)
        try:
            path.mkdir(mode=0o777)
            return path
        except FileExistsError:  # pragma: no cover
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(directory))  # pragma: no cover


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` via temp file → rename (mode as ``open()``).

    ``durable``: fsync the file before and the folder after the rename, so the new
    content survives a power loss (off for files rewritten every few seconds, such as
    heartbeats). On any error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp_file(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode(), durable)


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Render a matplotlib ``Figure`` as PNG and write it atomically to ``path``.

    Takes a ``matplotlib.figure.Figure`` built without pyplot: no backend is selected
    and no global figure state is touched.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
