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

from scidl.data.formats import (
    ZARR_MARKERS,
    DataError,
    DirectReader,
    SampleReader,
    Source,
    open_source,
    sample_reader,
)

DATA_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nc", ".nc4", ".npy", ".zarr")

_PROCESS = [0]  # bumped in a child after fork (hook registered with the first dataset)


def _watch_forks() -> None:
    if _PROCESS[0] == 0:
        _PROCESS[0] = 1
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=lambda: _PROCESS.__setitem__(0, _PROCESS[0] + 1))


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
        reader: ``"auto"`` (the format detected per file) or a reader of
            :data:`scidl.data.formats.READERS`.
        readahead: bytes read ahead when samples of a file are asked for in order (the
            third consecutive sample reads the following ones in one call), for formats
            whose every read has a high fixed cost (Zarr, xarray); 0: never.
        max_open: most files kept open per process (the oldest is closed); None: all.

    Reads: uncompressed HDF5/netCDF-4 variables are read straight from the file
    (:class:`scidl.data.formats.DirectReader`, one descriptor per file, the layout
    checked against the library once per file; :meth:`read_paths` says which way each
    variable is read), the rest through their library. A batch of indices
    (:meth:`__getitems__`, which ``DataLoader`` uses) reads each run of consecutive
    samples of a file in one call.

    Picklable: handles opened in one process are never sent to another (a forked
    worker notices the new process id and opens its own).
    """

    def __init__(self, paths: str | Path | Sequence[str | Path], variables: Sequence[str],
                 dtypes: dict[str, torch.dtype] | None = None,
                 transform: Callable[[tuple[torch.Tensor, ...]], Any] | None = None,
                 reader: str = "auto", readahead: int = 4 << 20,
                 max_open: int | None = None) -> None:
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
        if readahead < 0 or (max_open is not None and max_open < 1):
            raise DataError(f"readahead must be >= 0 and max_open >= 1 (got {readahead}, "
                            f"{max_open})")
        self.readahead, self.max_open = readahead, max_open
        _watch_forks()
        self._pid = os.getpid()
        self._reset_handles()

    def _reset_handles(self) -> None:
        """Forget this process's open files, readers and read-ahead (no closing)."""
        self._generation = -1  # the next read checks the process id
        self._open: dict[int, Source] = {}
        self._readers: dict[int, list[Callable[[int | slice], torch.Tensor]]] = {}
        self._kinds: dict[int, dict[str, str]] = {}
        self._index: dict[int, dict[str, str]] = {}
        self._ahead_files: set[int] = set()
        self._ahead: tuple[int, int, int, list[torch.Tensor], int] | None = None
        self._last: tuple[int, int] = (-1, -1)
        self._streak = 0
        self._sample_bytes: int | None = None

    def _close_file(self, file: int) -> None:
        src = self._open.pop(file, None)
        self._readers.pop(file, None)
        self._kinds.pop(file, None)
        self._index.pop(file, None)
        self._ahead_files.discard(file)
        if self._ahead is not None and self._ahead[0] == file:
            self._ahead = None
        if src is not None:
            src.close()

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
        n = self._offsets[-1]
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"sample {index} out of range for {n} samples")
        f = bisect.bisect_right(self._offsets, index) - 1
        return f, index - self._offsets[f]

    def file_indices(self, file: int) -> range:
        """Global sample indices held by file number ``file``."""
        return range(self._offsets[file], self._offsets[file + 1])

    def _check_process(self) -> None:
        if self._generation != _PROCESS[0] and self._pid != os.getpid():
            # a forked copy: the parent's handles are not ours; kept, unused and unclosed
            # (closing a handle inherited through fork is not ours to do)
            self._inherited = [*getattr(self, "_inherited", []), *self._open.values()]
            self._pid = os.getpid()
            self._reset_handles()
        self._generation = _PROCESS[0]

    def _source(self, file: int) -> Source:
        self._check_process()
        src = self._open.get(file)
        if src is None:
            if self.max_open is not None and len(self._open) >= self.max_open:
                self._close_file(next(iter(self._open)))  # the least recently opened
            src = self._open[file] = open_source(self.paths[file], self.reader)
        return src

    def _file_readers(self, file: int) -> list[Callable[[int | slice], torch.Tensor]]:
        """One function per variable: index or run of samples -> tensor as returned."""
        self._check_process()
        fns = self._readers.get(file)
        if fns is None:
            src = self._source(file)
            raw = [sample_reader(src, v) for v in self.variables]
            self._kinds[file] = {v: "direct" if isinstance(r, DirectReader) else src.format
                                 for v, r in zip(self.variables, raw, strict=True)}
            self._index[file] = {v: r.index for v, r in zip(self.variables, raw, strict=True)
                                 if isinstance(r, DirectReader)}
            fns = self._readers[file] = [self._converter(v, r)
                                         for v, r in zip(self.variables, raw, strict=True)]
            # read-ahead pays where a library call costs much more than its bytes (Zarr,
            # xarray); a direct or h5py read of one sample costs little more than its
            # copy, and a large block only adds page faults on fresh memory
            if getattr(src, "per_call_overhead", False):
                self._ahead_files.add(file)
        return fns

    def read_paths(self, file: int = 0) -> dict[str, str]:
        """How this process reads each variable of file number ``file``: ``"direct"``
        (:class:`~scidl.data.formats.DirectReader`) or the format whose library reads it."""
        self._file_readers(file)
        return dict(self._kinds[file])

    def chunk_index(self, file: int = 0) -> dict[str, str]:
        """How this process found the file offsets of each directly read variable of file
        number ``file``: ``"table"`` (the whole chunk index read at open), ``"per chunk"``
        (looked up as reached: the file was not in the page cache when opened) or
        ``"contiguous"``; the file is opened if it is not yet."""
        self._file_readers(file)
        return dict(self._index[file])

    def _converter(self, name: str, read: SampleReader) -> Callable[[int | slice], torch.Tensor]:
        dt = self.dtypes.get(name)
        if isinstance(read, DirectReader) or getattr(read, "native_copies", False):
            # new, native, contiguous arrays already
            if dt is None:
                return lambda index: torch.from_numpy(read(index))
            return lambda index: torch.from_numpy(read(index)).to(dt)

        def fn(index: int | slice) -> torch.Tensor:
            a = read(index)
            if not a.dtype.isnative:  # big-endian files read through a library
                a = a.astype(a.dtype.newbyteorder("="))
            t = torch.from_numpy(a if a.flags.c_contiguous else np.ascontiguousarray(a))
            return t if dt is None else t.to(dt)

        return fn

    def __getitem__(self, index: int) -> Any:
        f, i = self.locate(int(index))
        fns = self._readers.get(f) if self._generation == _PROCESS[0] else None
        if fns is None:
            fns = self._file_readers(f)
        out = self._from_ahead(f, i) if self.readahead and f in self._ahead_files else None
        if out is None:
            out = tuple([read(i) for read in fns])
            if self._sample_bytes is None:
                self._sample_bytes = sum(t.numel() * t.element_size() for t in out)
        return self.transform(out) if self.transform else out

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """Samples ``indices`` (a batch), as ``[self[i] for i in indices]``; the samples
        of each file are read in order, a run of consecutive samples in one call per
        variable. ``torch.utils.data.DataLoader`` calls this with each batch's indices."""
        located = [self.locate(int(i)) for i in indices]
        out: list[Any] = [None] * len(located)
        for f, start, stop, slots in _runs(located):
            fns = self._file_readers(f)
            if stop - start == 1:
                block = [read(start).unsqueeze(0) for read in fns]
            else:
                block = [read(slice(start, stop)) for read in fns]
            for k, slot, first in slots:
                # a sample asked twice gets its own tensors (a transform may work in place)
                out[slot] = tuple([b[k] if first else b[k].clone() for b in block])
        if self.transform:
            out = [self.transform(o) for o in out]
        return out

    def _from_ahead(self, f: int, i: int) -> tuple[torch.Tensor, ...] | None:
        """Sequential reads within a file (``i`` after ``i - 1`` after ``i - 2``) read the
        next samples of the file in one call (up to ``readahead`` bytes), served in turn;
        each read-ahead sample is handed out once."""
        ahead = self._ahead
        if ahead is not None and ahead[0] == f and ahead[1] == i and i < ahead[2]:
            self._ahead = (f, i + 1, ahead[2], ahead[3], ahead[4])
            self._last = (f, i)
            k = i - ahead[4]
            return tuple([b[k] for b in ahead[3]])
        last = self._last
        self._last = (f, i)
        streak = self._streak + 1 if last == (f, i - 1) else 0
        self._streak = streak
        if streak < 2:
            return None
        per_sample = self._sample_bytes
        if per_sample is None:
            return None
        stop = min(self.sizes[f], i + max(self.readahead // max(per_sample, 1), 1))
        if stop - i < 2:
            return None
        block = [read(slice(i, stop)) for read in self._file_readers(f)]
        self._ahead = (f, i + 1, stop, block, i)
        return tuple([b[0] for b in block])

    def close(self) -> None:
        """Close the handles this process opened."""
        for f in list(self._open):
            self._close_file(f)
        self._reset_handles()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_open", "_readers", "_ahead", "_inherited"):
            state.pop(key, None)  # never pickle an open handle
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        _watch_forks()  # a fresh (spawned) interpreter
        self._reset_handles()

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
        out.__setstate__(self.__getstate__())
        out.paths = list(self.paths)
        for i, c in zip(chosen, copies, strict=True):
            out.paths[i] = c
        out._pid = os.getpid()
        return out


def _runs(located: Sequence[tuple[int, int]]
          ) -> list[tuple[int, int, int, list[tuple[int, int, bool]]]]:
    """Group (file, sample) pairs into runs of consecutive samples of one file:
    ``(file, start, stop, [(sample - start, position in located, first time asked)])``."""
    order = sorted(range(len(located)), key=located.__getitem__)
    runs: list[tuple[int, int, int, list[tuple[int, int, bool]]]] = []
    for pos in order:
        f, i = located[pos]
        if runs and runs[-1][0] == f and i in (runs[-1][2] - 1, runs[-1][2]):
            rf, start, stop, slots = runs[-1]
            first = i == stop
            slots.append((i - start, pos, first))
            runs[-1] = (rf, start, stop + first, slots)
        else:
            runs.append((f, i, i + 1, [(0, pos, True)]))
    return runs


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
