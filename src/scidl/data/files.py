"""Map-style datasets over many files on disk, opened lazily in each process.

:class:`FileDataset` concatenates the samples (first axis) of one or more sources
(HDF5/netCDF-4 files, Zarr stores, ``.npy`` files or folders, netCDF-3 files; see
:mod:`scidl.data.formats`). Sample ``i`` is a tuple with one tensor per requested
variable. The dataset holds paths and sizes only: files are opened on first use in the
process that reads them (a ``DataLoader`` worker, after fork or spawn), and a pickled or
forked copy never carries an open handle.

:func:`stage_files` copies files to node-local storage before training (as the DeepCAM
reference does); :meth:`FileDataset.staged` returns the dataset reading from the copies.
"""

from __future__ import annotations

import bisect
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from scidl.data.formats import ZARR_MARKERS, DataError, Source, open_source

DATA_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nc", ".nc4", ".npy", ".zarr")


def find_files(path: str | Path, pattern: str | None = None) -> list[Path]:
    """The data sources under ``path``, sorted: ``path`` itself if it is a file or a single
    store (Zarr, a folder of ``.npy`` variables), else the files/stores in the folder that
    match ``pattern`` (default: every name ending in one of :data:`DATA_SUFFIXES`)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"no such file or folder: {p}")
    if p.is_file() or any((p / m).exists() for m in ZARR_MARKERS):
        return [p]
    if pattern is None:
        found = sorted(c for c in p.iterdir() if c.suffix in DATA_SUFFIXES and c.suffix != ".npy")
        if not found and any(p.glob("*.npy")):  # a folder of .npy variables is one store
            return [p]
    else:
        found = sorted(p.glob(pattern))
    if not found:
        raise DataError(f"no data files in {p} " + (f"matching {pattern!r}" if pattern else
                        f"(looked for {' '.join(DATA_SUFFIXES)} and folders of .npy files)"))
    return found


class FileDataset(Dataset):
    """Samples of ``variables`` from ``paths`` (concatenated along the first axis).

    Args:
        paths: files or stores (or one folder: :func:`find_files`).
        variables: names of the arrays to read (``"fields"``, ``"climate/data"``); every
            source must hold all of them with the same number of samples.
        dtypes: optional torch dtype per variable (default: the stored dtype; ``uint8``
            labels stay ``uint8`` unless asked, e.g. ``{"labels": torch.int64}``).
        transform: optional function of the tuple of tensors (runs in the worker).

    Picklable: handles opened in one process are never sent to another (a forked
    worker notices the new process id and opens its own).
    """

    def __init__(self, paths: str | Path | Sequence[str | Path], variables: Sequence[str],
                 dtypes: dict[str, torch.dtype] | None = None,
                 transform: Callable[[tuple[torch.Tensor, ...]], Any] | None = None,
                 reader: str = "auto") -> None:
        if isinstance(paths, (str, Path)):
            paths = find_files(paths)
        if not paths:
            raise DataError("FileDataset needs at least one file")
        if not variables:
            raise DataError("FileDataset needs at least one variable name")
        self.paths = [Path(p) for p in paths]
        self.variables = list(variables)
        self.dtypes = dict(dtypes or {})
        self.transform = transform
        self.reader = reader  # "auto" (detected per file) or a reader of scidl.data.formats
        self.sizes = [self._size_of(p) for p in self.paths]
        self._offsets = np.concatenate([[0], np.cumsum(self.sizes)]).tolist()
        self._open: dict[int, Source] = {}
        self._pid = os.getpid()

    def _size_of(self, path: Path) -> int:
        src = open_source(path, self.reader)
        try:
            info = src.variables()
            sizes = set()
            for v in self.variables:
                if v not in info:
                    raise DataError(f"{path}: no variable '{v}' (variables: {', '.join(info)})")
                sizes.add(info[v].shape[0])
            if len(sizes) != 1:
                raise DataError(f"{path}: variables {', '.join(self.variables)} differ in "
                                f"their number of samples (first axis: {sorted(sizes)})")
            return sizes.pop()
        finally:
            src.close()

    def __len__(self) -> int:
        return self._offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """(file number, sample within that file) of global sample ``index``."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        f = bisect.bisect_right(self._offsets, index) - 1
        return f, index - self._offsets[f]

    def file_indices(self, file: int) -> range:
        """Global sample indices held by file number ``file``."""
        return range(self._offsets[file], self._offsets[file + 1])

    def _source(self, file: int) -> Source:
        if self._pid != os.getpid():  # a forked copy: the parent's handles are not ours
            # kept, unused and unclosed: closing a handle inherited through fork is not ours to do
            self._inherited = [*getattr(self, "_inherited", []), *self._open.values()]
            self._open, self._pid = {}, os.getpid()
        src = self._open.get(file)
        if src is None:
            src = self._open[file] = open_source(self.paths[file], self.reader)
        return src

    def __getitem__(self, index: int) -> Any:
        f, i = self.locate(int(index))
        src = self._source(f)
        out = tuple([self._tensor(v, src.read(v, i)) for v in self.variables])
        return self.transform(out) if self.transform else out

    def _tensor(self, name: str, a: np.ndarray) -> torch.Tensor:
        if not a.dtype.isnative:  # big-endian files (netCDF-3 is big-endian)
            a = a.astype(a.dtype.newbyteorder("="))
        t = torch.from_numpy(np.ascontiguousarray(a))
        dt = self.dtypes.get(name)
        return t if dt is None else t.to(dt)

    def close(self) -> None:
        """Close the handles this process opened."""
        for src in self._open.values():
            src.close()
        self._open = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = {}  # never pickle an open handle
        state.pop("_inherited", None)
        return state

    def __del__(self) -> None:
        try:
            if self._pid == os.getpid():
                self.close()
        except Exception:  # noqa: BLE001 (interpreter shutdown)
            pass

    def staged(self, stage_dir: str | Path, files: Iterable[int] | None = None) -> FileDataset:
        """A copy of this dataset reading ``files`` (numbers; default all) from copies in
        ``stage_dir`` (:func:`stage_files`); the other files are read where they are."""
        chosen = sorted(set(range(len(self.paths)) if files is None else files))
        copies = stage_files([self.paths[i] for i in chosen], stage_dir)
        out = FileDataset.__new__(FileDataset)
        out.__dict__.update(self.__getstate__())
        out.paths = list(self.paths)
        for i, c in zip(chosen, copies, strict=True):
            out.paths[i] = c
        out._pid = os.getpid()
        return out


def stage_files(paths: Sequence[Path], stage_dir: str | Path) -> list[Path]:
    """Copy ``paths`` into ``stage_dir`` (kept under their names; a file already there with
    the same size is reused) and return the copies. Each copy is written to a temporary
    name and renamed, so a reader never sees a half-written file."""
    root = Path(stage_dir)
    root.mkdir(parents=True, exist_ok=True)
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise DataError(f"cannot stage into {root}: two files share a name")
    out = []
    for p in paths:
        dest = root / p.name
        if not _same_copy(p, dest):
            tmp = root / f".{p.name}.{os.getpid()}.part"
            if p.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(p, tmp)
                shutil.rmtree(dest, ignore_errors=True)
            else:
                shutil.copyfile(p, tmp)
            os.replace(tmp, dest)
        out.append(dest)
    return out


def _same_copy(src: Path, dest: Path) -> bool:
    if not dest.exists():
        return False
    if src.is_dir():
        return dest.is_dir() and _tree_size(src) == _tree_size(dest)
    return dest.is_file() and dest.stat().st_size == src.stat().st_size


def _tree_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
