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

    def close(self) -> None:
        self._ds.clear()
        self._f.close()


class ZarrSource:
    """Zarr stores (v2 or v3) through ``zarr``; variables: every array, by its path."""

    format = "zarr"

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
