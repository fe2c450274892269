"""Readers for science data on disk: HDF5 (and netCDF-4), Zarr, NumPy ``.npy``, netCDF-3.

A *source* is one file or store holding named arrays (variables) whose first axis
indexes samples. :func:`open_source` detects the format from the bytes on disk, not the
file name, and returns a reader with the same small interface for every format::

    src = open_source("era5_2019.h5")
    src.variables()          # {"fields": VarInfo(shape, dtype, chunks, compression), ...}
    src.read("fields", 7)    # numpy array of sample 7
    src.close()

Formats and the package each needs (a missing one is a :class:`DataError` naming it):

* HDF5 files, including netCDF-4 files (HDF5 underneath): ``h5py``;
* Zarr stores (a folder with ``.zgroup``/``.zarray``/``zarr.json``): ``zarr``;
* NumPy: one ``.npy`` file (one variable named after the file) or a folder of ``.npy``
  files (one variable each), memory-mapped: numpy only;
* netCDF-3 (classic) files: ``scipy`` (memory-mapped through ``scipy.io.netcdf_file``);
* anything ``xarray`` opens (``reader="xarray"``: netCDF through netCDF4/h5netcdf/scipy,
  GRIB through cfgrib, ...), decoded as CF says: packed values unpacked with
  ``scale_factor``/``add_offset``, ``_FillValue`` as NaN. Files in a format SciDL does
  not recognise are tried with xarray when it is installed.

The HDF5 reader unpacks ``scale_factor``/``add_offset`` too (packed netCDF-4 variables
read through h5py give the same values as through xarray); it leaves fill values as
stored.

Readers hold open file handles: never pickle one (datasets reopen them per process).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from scidl.config import ConfigError

FORMATS = ("hdf5", "zarr", "npy", "netcdf3", "xarray")
#: what ``reader`` may be: auto-detect, or one of the formats' readers by name
READERS = ("auto", *FORMATS)
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"
NETCDF3_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05")
ZARR_MARKERS = (".zgroup", ".zarray", "zarr.json")


class DataError(ConfigError):
    """A user error about data files (missing, unknown format, missing package); one line."""


@dataclass(frozen=True)
class VarInfo:
    """What :meth:`Source.variables` reports about one variable."""

    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...] | None
    compression: str | None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


class Source(Protocol):
    """An open file or store of named arrays whose first axis is the sample axis."""

    path: Path
    format: str

    def variables(self) -> dict[str, VarInfo]: ...

    def read(self, name: str, index: int | slice) -> np.ndarray: ...

    def close(self) -> None: ...


#: reads one sample (an int) or a run of samples (a slice of step 1) of one variable
SampleReader = Callable[[int | slice], np.ndarray]


def native_copies(read: SampleReader) -> SampleReader:
    """Mark ``read`` as returning new, C-contiguous arrays in native byte order (the
    dataset then wraps them without checking)."""
    read.native_copies = True  # type: ignore[attr-defined]
    return read


def sample_reader(src: Source, name: str) -> SampleReader:
    """The fastest way ``src`` offers to read variable ``name``: the source's own
    ``sample_reader`` where it has one (direct reads of uncompressed data, see
    :class:`DirectReader`), else ``src.read`` bound to the name."""
    own = getattr(src, "sample_reader", None)
    if own is not None:
        return own(name)
    return lambda index: src.read(name, index)


def require(package: str, what: str) -> Any:
    """Import ``package`` or raise a one-line :class:`DataError` naming it."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise DataError(f"{what} needs the Python package '{package}' (pip install "
                        f"{package}); it is not installed") from None


def detect_format(path: str | Path) -> str:
    """One of :data:`FORMATS` for ``path``, from its first bytes (files) or its contents
    (folders); a :class:`DataError` for a missing path or an unknown format."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"no such file or folder: {p}")
    if p.is_dir():
        if any((p / m).exists() for m in ZARR_MARKERS):
            return "zarr"
        if any(p.glob("*.npy")):
            return "npy"
        raise DataError(f"{p} is a folder but neither a Zarr store nor a folder of .npy "
                        "files; name a file (or use scidl.data.find_files for a folder of files)")
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise DataError(f"cannot read {p}: {e.strerror or e}") from None
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head[:4] in NETCDF3_MAGIC:
        return "netcdf3"
    if importlib.util.find_spec("xarray") is not None:
        return "xarray"  # GRIB and the other formats of xarray's installed backends
    raise DataError(f"{p}: unknown data format (not HDF5/netCDF, Zarr, .npy or netCDF-3; "
                    "with xarray installed, its backends are tried too)")


def open_source(path: str | Path, reader: str = "auto") -> Source:
    """A reader for ``path``: ``reader="auto"`` detects the format
    (:func:`detect_format`); a name from :data:`FORMATS` forces that reader."""
    if reader not in READERS:
        raise DataError(f"reader {reader!r}: expected one of {', '.join(READERS)}")
    fmt = detect_format(path) if reader == "auto" else reader
    if not Path(path).exists():
        raise DataError(f"no such file or folder: {path}")
    readers: dict[str, Callable[[Path], Source]] = {
        "hdf5": H5Source, "zarr": ZarrSource, "npy": NpySource, "netcdf3": NetCDF3Source,
        "xarray": XarraySource}
    return readers[fmt](Path(path))


def _sample_axis_error(path: Path, name: str, known: list[str]) -> DataError:
    return DataError(f"{path}: no variable '{name}' (variables: {', '.join(known) or 'none'})")


class H5Source:
    """HDF5 and netCDF-4 files through ``h5py`` (variables: every dataset, by its path)."""

    format = "hdf5"

    def __init__(self, path: Path) -> None:
        h5py = require("h5py", "reading HDF5/netCDF-4 files")
        self.path = path
        self._f = h5py.File(path, "r")
        self._ds: dict[str, Any] = {}
        self._packing: dict[str, tuple[Any, Any]] = {}  # CF scale_factor, add_offset
        self._direct: list[DirectReader] = []
        self._file = SharedFile(path)  # one descriptor for every direct reader of the file
        self._index = "auto"  # how chunk indexes are read (see _h5_layout)

    def _warm(self, offset: int) -> bool | None:
        """Whether the file's bytes look to be in the page cache: the byte at ``offset``
        and the file's last byte (None: the system cannot tell)."""
        first = self._file.cached(offset)
        if not first:
            return first
        last = os.fstat(self._file.fd()).st_size - 1
        return self._file.cached(last) is not False

    def variables(self) -> dict[str, VarInfo]:
        import h5py

        out: dict[str, VarInfo] = {}

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and obj.shape:
                comp = obj.compression
                if comp and obj.compression_opts is not None:
                    comp = f"{comp}({obj.compression_opts})"
                dtype = obj.dtype
                sf, ao = cf_packing(obj.attrs)
                if (sf, ao) != (None, None):  # read() unpacks: report the unpacked type
                    dtype = np.result_type(*(np.asarray(v) for v in (sf, ao) if v is not None))
                out[name] = VarInfo(tuple(obj.shape), str(dtype), obj.chunks, comp)

        self._f.visititems(visit)
        return out

    def _dataset(self, name: str) -> Any:
        ds = self._ds.get(name)
        if ds is None:
            if name not in self._f:
                raise _sample_axis_error(self.path, name, list(self.variables()))
            ds = self._ds[name] = self._f[name]
        return ds

    def read(self, name: str, index: int | slice) -> np.ndarray:
        ds = self._dataset(name)
        out = ds[index]
        packed = self._packing.get(name)
        if packed is None:
            packed = self._packing[name] = cf_packing(ds.attrs)
        return out if packed == (None, None) else unpack(out, *packed)

    def sample_reader(self, name: str) -> SampleReader:
        """Uncompressed chunked or contiguous variables are read straight from the file
        (:class:`DirectReader`, all of them through one descriptor of the file); the rest
        through h5py. CF packing is undone either way."""
        ds = self._dataset(name)
        packed = cf_packing(ds.attrs)
        via_h5py: SampleReader = ds.__getitem__
        read = via_h5py
        layout = None
        if self._f.userblock_size == 0:
            layout = _h5_layout(ds, self._warm, self._index)
            if layout is not None and layout.index in INDEX_READS:
                self._index = layout.index  # decided once per file, by its first chunked variable
        if layout is not None:
            direct = DirectReader(self.path, tuple(ds.shape), ds.dtype, layout.block,
                                  layout.offset, block_bytes=layout.nbytes, file=self._file)
            direct.index = layout.index
            if direct.agrees_with(via_h5py):
                self._direct.append(direct)
                read = direct
        if packed == (None, None):
            return read
        return lambda index: unpack(read(index), *packed)

    def close(self) -> None:
        for d in self._direct:
            d.close()
        self._direct.clear()
        self._file.close()
        self._ds.clear()
        self._f.close()


#: how a chunked variable's chunk index is read: whole at open, or chunk by chunk
INDEX_READS = ("table", "per chunk")


@dataclass
class BlockLayout:
    """Where the samples of an array lie uncompressed in a file: blocks of ``block``
    samples, block ``j`` at file offset ``offset(j)`` taking ``nbytes(j)`` bytes (None:
    not stored plainly). ``index``: ``"contiguous"``, or how the chunk index is read,
    ``"table"`` (every chunk in one pass at open) or ``"per chunk"`` (each chunk looked
    up when first read: the file was not in the page cache, see :func:`_h5_layout`)."""

    block: int
    offset: Callable[[int], int | None]
    nbytes: Callable[[int], int | None]
    index: str


def _h5_layout(ds: Any, cached: Callable[[int], bool | None] | None = None,
               index: str = "auto") -> BlockLayout | None:
    """Where an HDF5 dataset's samples lie uncompressed in the file; None where h5py must
    read it (filters, external or virtual storage, compound or variable-length types,
    chunks that split a sample). Offsets and sizes come from the file's own chunk index
    (or the contiguous storage's offset and size): no data is read.

    ``index``: ``"table"`` reads the whole chunk index at open (one pass, ~2 µs a chunk
    once it is in memory), ``"per chunk"`` looks each chunk up when first read (~6 µs a
    chunk), ``"auto"`` asks ``cached(last byte of chunk 0)`` whether the file's bytes
    are in the page cache: yes (or unknown) -> table; no -> per chunk. On a cold cache a
    whole-index pass is a run of small reads scattered over the file before the first
    sample, while chunk by chunk the index nodes are read as reached, mostly already
    brought in by the kernel's read-ahead of the samples around them (HDF5 itself reads
    its index so)."""
    import h5py

    if index not in ("auto", *INDEX_READS):
        raise ValueError(f"index {index!r}: expected auto or one of {', '.join(INDEX_READS)}")
    if not ds.shape or not ds.shape[0] or ds.dtype.kind not in "biuf" or ds.dtype.hasobject:
        return None
    try:
        plist = ds.id.get_create_plist()
        if plist.get_nfilters() or plist.get_external_count():
            return None
        layout = plist.get_layout()
    except (AttributeError, RuntimeError, ValueError):
        return None
    if layout == h5py.h5d.CONTIGUOUS:
        offset = ds.id.get_offset()
        if offset is None:  # never written: fill values, h5py supplies them
            return None
        size = int(ds.id.get_storage_size())
        return BlockLayout(int(ds.shape[0]), lambda j: int(offset) if j == 0 else None,
                           lambda j: size if j == 0 else None, "contiguous")
    if layout != h5py.h5d.CHUNKED or tuple(ds.chunks[1:]) != tuple(ds.shape[1:]):
        return None
    k = int(ds.chunks[0])
    rest = (0,) * (len(ds.shape) - 1)
    table: dict[int, tuple[int, int] | None] = {}

    def lookup(j: int) -> tuple[int, int] | None:
        try:
            info = ds.id.get_chunk_info_by_coord((j * k, *rest))
        except (AttributeError, RuntimeError, ValueError, KeyError):
            return None
        off = info.byte_offset
        return None if off is None or info.filter_mask else (int(off), int(info.size))

    def read_table() -> bool:
        """Every chunk's offset and size in one pass over the chunk index (h5py >= 3.8 built on
        HDF5 >= 1.12.3; without that iterator every chunk is looked up when first read)."""
        def one(info: Any) -> None:
            off = info.byte_offset
            table[int(info.chunk_offset[0]) // k] = \
                None if off is None or info.filter_mask else (int(off), int(info.size))

        try:
            ds.id.chunk_iter(one)
            return True
        except (AttributeError, RuntimeError, ValueError, TypeError):
            table.clear()
            return False

    if index == "auto":  # probe the end of chunk 0, past what opening the file read
        first = lookup(0)
        warm = True if first is None or cached is None else cached(sum(first) - 1)
        index = "per chunk" if warm is False else "table"
    if index == "table" and not read_table():
        index = "per chunk"

    def chunk(j: int) -> tuple[int, int] | None:
        if j in table:
            return table[j]
        found = table[j] = lookup(j)
        return found

    return BlockLayout(k, lambda j: (c := chunk(j)) and c[0],
                       lambda j: (c := chunk(j)) and c[1], index)


class ZarrSource:
    """Zarr stores (v2 or v3) through ``zarr``; variables: every array, by its path."""

    format = "zarr"
    per_call_overhead = True  # a read costs ~1 ms whatever its size: read runs at once

    def __init__(self, path: Path) -> None:
        zarr = require("zarr", "reading Zarr stores")
        self.path = path
        self._root = zarr.open(str(path), mode="r")
        self._cache: dict[str, Any] | None = None

    def _arrays(self) -> dict[str, Any]:
        root = self._root
        if hasattr(root, "shape"):  # the store is a single array
            return {self.path.name: root}
        out: dict[str, Any] = {}
        stack = [("", root)]
        while stack:
            prefix, group = stack.pop()
            for name, arr in group.arrays():
                out[prefix + name] = arr
            for name, sub in group.groups():
                stack.append((f"{prefix}{name}/", sub))
        return out

    def variables(self) -> dict[str, VarInfo]:
        out = {}
        for name, a in self._arrays().items():
            out[name] = VarInfo(tuple(a.shape), str(a.dtype), tuple(a.chunks), _zarr_codecs(a))
        return out

    def read(self, name: str, index: int | slice) -> np.ndarray:
        if self._cache is None:
            self._cache = self._arrays()
        if name not in self._cache:
            raise _sample_axis_error(self.path, name, list(self._cache))
        return np.asarray(self._cache[name][index])

    def sample_reader(self, name: str) -> SampleReader:
        if self._cache is None:
            self._cache = self._arrays()
        if name not in self._cache:
            raise _sample_axis_error(self.path, name, list(self._cache))
        arr = self._cache[name]
        return lambda index: np.asarray(arr[index])

    def close(self) -> None:
        self._cache = None


def _zarr_codecs(a: Any) -> str | None:
    """The compressor(s) of a Zarr array (v2: ``compressor``, v3: ``compressors``)."""
    for attr in ("compressors", "compressor"):
        try:
            codecs = getattr(a, attr)
        except Exception:  # noqa: BLE001 (zarr 3 raises for the v2 attribute on v3 arrays)
            continue
        if codecs:
            return str(codecs)
    return None


class NpySource:
    """One ``.npy`` file or a folder of them, memory-mapped (``np.load(mmap_mode="r")``)."""

    format = "npy"

    def __init__(self, path: Path) -> None:
        self.path = path
        files = sorted(path.glob("*.npy")) if path.is_dir() else [path]
        self._files = {f.stem: f for f in files}
        self._arr: dict[str, np.ndarray] = {}

    def _array(self, name: str) -> np.ndarray:
        a = self._arr.get(name)
        if a is None:
            if name not in self._files:
                raise _sample_axis_error(self.path, name, list(self._files))
            a = self._arr[name] = np.load(self._files[name], mmap_mode="r")
        return a

    def variables(self) -> dict[str, VarInfo]:
        return {n: VarInfo(tuple(self._array(n).shape), str(self._array(n).dtype), None, None)
                for n in self._files}

    def read(self, name: str, index: int | slice) -> np.ndarray:
        return np.array(self._array(name)[index])  # a copy: the map may be closed later

    def sample_reader(self, name: str) -> SampleReader:
        """Copies out of the memory map: once the map's pages are in, a copy costs less
        than a system call per sample (:class:`DirectReader` is slower here)."""
        a = self._array(name)
        if not a.dtype.isnative:
            native = a.dtype.newbyteorder("=")
            return native_copies(lambda index: np.array(a[index], dtype=native, order="C"))
        return native_copies(lambda index: np.array(a[index], order="C"))

    def close(self) -> None:
        self._arr.clear()


class NetCDF3Source:
    """netCDF-3 (classic, 64-bit offset) files through ``scipy.io.netcdf_file`` (mmap)."""

    format = "netcdf3"

    def __init__(self, path: Path) -> None:
        io = require("scipy.io", "reading netCDF-3 files")
        self.path = path
        self._f = io.netcdf_file(str(path), "r", mmap=True)

    def variables(self) -> dict[str, VarInfo]:
        return {n: VarInfo(tuple(v.shape), str(v.data.dtype), None, None)
                for n, v in self._f.variables.items() if v.shape}

    def read(self, name: str, index: int | slice) -> np.ndarray:
        if name not in self._f.variables:
            raise _sample_axis_error(self.path, name, list(self._f.variables))
        return np.array(self._f.variables[name].data[index])

    def sample_reader(self, name: str) -> SampleReader:
        """Samples in native byte order (netCDF-3 stores big-endian), converted while
        copied out of the memory map: one pass over the bytes (a direct read would need
        a second pass to swap them)."""
        if name not in self._f.variables:
            raise _sample_axis_error(self.path, name, list(self._f.variables))
        data = self._f.variables[name].data  # dropped with the reader, before close()
        native = data.dtype.newbyteorder("=")
        return native_copies(lambda index: np.array(data[index], dtype=native, order="C"))

    def close(self) -> None:
        self._f.close()


def cf_packing(attrs: Any) -> tuple[Any, Any]:
    """The CF ``(scale_factor, add_offset)`` of a variable's attributes (None when absent)."""
    def one(key: str) -> Any:
        v = attrs.get(key)
        if v is None:
            return None
        v = np.asarray(v)
        return v.reshape(-1)[0] if v.size else None

    return one("scale_factor"), one("add_offset")


def unpack(a: np.ndarray, scale: Any, offset: Any) -> np.ndarray:
    """``a * scale_factor + add_offset`` (CF packing), in the attributes' floating type."""
    dtype = np.result_type(*(np.asarray(v) for v in (scale, offset) if v is not None))
    out = np.asarray(a, dtype=dtype)
    if scale is not None:
        out = out * np.asarray(scale, dtype=dtype)
    if offset is not None:
        out = out + np.asarray(offset, dtype=dtype)
    return out


class XarraySource:
    """Any file xarray opens with its installed backends, CF-decoded (packed values
    unpacked, fill values as NaN); variables: the data variables. Lazy: one sample is
    read per :meth:`read`."""

    format = "xarray"
    per_call_overhead = True

    def __init__(self, path: Path) -> None:
        xr = require("xarray", "reading files through xarray")
        self.path = path
        try:
            self._ds = xr.open_dataset(path, cache=False)
        except (ValueError, OSError) as e:  # no backend recognises it, or unreadable
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(f"{path}: unknown data format (not HDF5/netCDF, Zarr, .npy or "
                            f"netCDF-3, and xarray cannot open it: {first})") from None

    def variables(self) -> dict[str, VarInfo]:
        out: dict[str, VarInfo] = {}
        for name, var in self._ds.data_vars.items():
            if not var.shape:
                continue
            enc = var.encoding
            chunks = enc.get("chunksizes") or enc.get("chunks") or enc.get("preferred_chunks")
            if isinstance(chunks, dict):
                chunks = tuple(chunks.get(d, n) for d, n in zip(var.dims, var.shape, strict=True))
            comp = enc.get("compression") or ("zlib" if enc.get("zlib") else None)
            level = enc.get("complevel") or enc.get("compression_opts")
            if comp and level:
                comp = f"{comp}({level})"
            out[str(name)] = VarInfo(tuple(var.shape), str(var.dtype),
                                     tuple(chunks) if chunks else None, comp)
        return out

    def read(self, name: str, index: int | slice) -> np.ndarray:
        if name not in self._ds.data_vars:
            raise _sample_axis_error(self.path, name, list(self.variables()))
        var = self._ds[name]
        return np.asarray(var.isel({var.dims[0]: index}).values)

    def close(self) -> None:
        self._ds.close()


def _native(a: np.ndarray) -> np.ndarray:
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


class SharedFile:
    """One read-only descriptor of a file, opened on first use, shared by the direct
    readers of the file's variables.

    The kernel keeps its read-ahead state per open file: reading a file's variables
    through one descriptor, as HDF5 itself does, keeps one sequential stream per file.
    With ``sequential=True`` the descriptor is opened with the hint
    ``posix_fadvise(POSIX_FADV_SEQUENTIAL)`` (Linux: a read-ahead window twice the
    device's default for this descriptor; reads at random positions still read only
    what they ask for).
    """

    def __init__(self, path: Path, sequential: bool = True) -> None:
        self.path, self.sequential = path, sequential
        self._fd: int | None = None

    def fd(self) -> int:
        if self._fd is None:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            if self.sequential and hasattr(os, "posix_fadvise"):
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                except OSError:  # a file system without the hint reads as before
                    pass
            self._fd = fd
        return self._fd

    def cached(self, offset: int) -> bool | None:
        """Whether the byte at ``offset`` is in the page cache (a read that must not wait:
        ``RWF_NOWAIT``); None where the system cannot tell. A miss starts the kernel's
        read of that place, which the first read there would start anyway."""
        nowait = getattr(os, "RWF_NOWAIT", None)
        if nowait is None:
            return None
        try:
            return os.preadv(self.fd(), [bytearray(1)], offset, nowait) == 1
        except BlockingIOError:
            return False
        except OSError:  # EOPNOTSUPP and the like: the file system cannot say
            return None

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("a SharedFile holds an open file; open it again in each process")


class DirectReader:
    """Samples of an array stored uncompressed in a file, read straight into new arrays.

    The array's first axis is split into blocks of ``block`` samples (HDF5 chunks; one
    block for contiguous storage) and block ``j`` starts at file offset
    ``block_offset(j)``, looked up once per block; where ``block_bytes`` is given, a
    block is read directly only if it takes exactly ``block`` samples' bytes in the file
    (the stride every sample's offset relies on), else through the library. A sample,
    or a run of samples, is one ``os.preadv`` per stretch of adjacent bytes in the file
    into a fresh array: no library call in between, one copy (kernel to array), the GIL
    released while reading (so a reading thread overlaps with computation). Arrays come
    back in native byte order (big-endian data is swapped in place). ``file``: the
    descriptor to read through, shared with the file's other readers (default: one of
    its own).

    Reads that are neither an ``int`` nor a slice of step 1 go to the library reader
    given to :meth:`agrees_with`, as do blocks that cannot be read directly.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype,
                 block: int, block_offset: Callable[[int], int | None],
                 block_bytes: Callable[[int], int | None] | None = None,
                 file: SharedFile | None = None) -> None:
        self.path, self.shape, self.dtype, self.block = path, tuple(shape), np.dtype(dtype), block
        self._native = self.dtype.newbyteorder("=")
        self._block_offset, self._block_bytes = block_offset, block_bytes
        self._offsets: dict[int, int] = {}  # block -> file offset; -1: read by the library
        self.sample_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._sample_shape = self.shape[1:]
        self._is_native = self.dtype.isnative
        self._own_file = file is None
        self.file = SharedFile(path) if file is None else file
        self._fallback: SampleReader | None = None
        #: how block offsets are found (:class:`BlockLayout`'s ``index``), for the record
        self.index = "given"

    def agrees_with(self, library: SampleReader, index: int = 0) -> bool:
        """Check the layout once against the library's own read of sample ``index``
        (default the first: the bytes a reading in order needs next, so on a cold cache
        the check costs no seek away from them; the stride to every other sample is
        checked per block against the stored sizes). On success the library serves the
        reads this reader does not do."""
        try:
            j = (index % self.shape[0]) // self.block
            ok = self._offset(j) >= 0 and np.array_equal(self(index), library(index))
        except (OSError, ValueError, IndexError):
            ok = False
        if not ok:
            self.close()
            return False
        self._fallback = library
        return True

    def _offset(self, j: int) -> int:
        """File offset of block ``j``, or -1 where the library must read it."""
        off = self._offsets.get(j)
        if off is None:
            found = self._block_offset(j)
            if found is not None and self._block_bytes is not None \
                    and self._block_bytes(j) != self.block * self.sample_bytes:
                found = None
            off = self._offsets[j] = -1 if found is None else found
        return off

    def _library(self, index: int | slice) -> np.ndarray:
        if self._fallback is None:
            raise ValueError(f"{self.path}: {index!r} is not stored uncompressed "
                             "and no library reader was given")
        return _native(self._fallback(index))

    def __call__(self, index: int | slice) -> np.ndarray:
        if type(index) is int:  # the hot path: one sample, one system call
            n = self.shape[0]
            if index < 0:
                index += n
            if not 0 <= index < n:
                raise IndexError(f"index {index - n if index < 0 else index} is out of range "
                                 f"for {n} samples")
            j = index // self.block
            off = self._offsets.get(j)
            if off is None:
                off = self._offset(j)
            if off < 0:
                return self._library(index)
            out = np.empty(self._sample_shape, self.dtype)
            at = off + (index - j * self.block) * self.sample_bytes
            if os.preadv(self.file.fd(), [out], at) != self.sample_bytes:  # type: ignore[list-item]
                self._pread(memoryview(out.reshape(-1).view(np.uint8).data), at)
            return out if self._is_native else self._as_native(out)
        if isinstance(index, np.integer):
            return self(int(index))
        if isinstance(index, slice):
            start, stop, step = index.indices(self.shape[0])
            if step != 1 and self._fallback is not None:
                return _native(self._fallback(index))
            out = np.empty((max(stop - start, 0), *self._sample_shape), self.dtype)
            if out.size:
                if any(self._offset(j) < 0 for j in range(start // self.block,
                                                           (stop - 1) // self.block + 1)):
                    return self._library(slice(start, stop))
                self._read_run(start, stop, out)
            return self._as_native(out)
        if self._fallback is None:
            raise TypeError(f"cannot read {index!r} directly")
        return _native(self._fallback(index))

    def _as_native(self, a: np.ndarray) -> np.ndarray:
        if self.dtype.isnative:
            return a
        return a.byteswap(inplace=True).view(self._native)

    def _read_run(self, start: int, stop: int, out: np.ndarray) -> None:
        """Samples ``start:stop`` into ``out``: adjacent stretches in one call each."""
        view = memoryview(out.reshape(-1).view(np.uint8).data)
        sb, k = self.sample_bytes, self.block
        pos, file_at, length = 0, -1, 0
        i = start
        while i < stop:
            j = i // k
            end = min(stop, (j + 1) * k)
            at = self._offset(j) + (i - j * k) * sb
            size = (end - i) * sb
            if at == file_at + length:  # continues the stretch
                length += size
            else:
                if length:
                    self._pread(view[pos:pos + length], file_at)
                    pos += length
                file_at, length = at, size
            i = end
        self._pread(view[pos:pos + length], file_at)

    def _pread(self, buf: memoryview, offset: int) -> None:
        fd = self.file.fd()
        done = 0
        while done < len(buf):
            got = os.preadv(fd, [buf[done:]], offset + done)
            if got <= 0:
                raise OSError(f"{self.path}: file ends before byte {offset + len(buf)}")
            done += got

    def close(self) -> None:
        """Close the descriptor if it is this reader's own (a shared one is closed by
        its owner, the source)."""
        if self._own_file:
            self.file.close()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("a DirectReader holds an open file; open it again in each process")
