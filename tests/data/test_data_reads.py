"""scidl.data read path: direct reads of uncompressed data agree with each library,
batched reads (``__getitems__``) and read-ahead return exactly what ``ds[i]`` returns."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from scidl.data import FileDataset, open_source
from scidl.data.formats import DirectReader, sample_reader

h5py = pytest.importorskip("h5py", reason="h5py is not installed (pip install scidl[hdf5])")
#: the chunk-index mode of a warm file: one pass where h5py can iterate the index
WHOLE_INDEX = "table" if hasattr(h5py.h5d.DatasetID, "chunk_iter") else "per chunk"

X = np.arange(7 * 3 * 4, dtype=np.float32).reshape(7, 3, 4) * 0.5 - 3


def _write_h5(path, **kw):
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=X.astype(kw.pop("dtype", X.dtype)), **kw)
        f.create_dataset("y", data=np.arange(7, dtype=np.int16))
    return path


@pytest.mark.parametrize("layout, direct", [
    ({"chunks": (3, 3, 4)}, True),              # 3 samples a chunk, the last chunk partial
    ({"chunks": (1, 3, 4)}, True),
    ({}, True),                                 # contiguous
    ({"dtype": ">f4", "chunks": (2, 3, 4)}, True),  # big-endian, swapped on read
    ({"chunks": (1, 3, 4), "compression": "gzip"}, False),
    ({"chunks": (1, 3, 2)}, False),             # a chunk splits a sample
])
def test_hdf5_direct_reads_match_h5py(tmp_path, layout, direct):
    path = _write_h5(tmp_path / "a.h5", **layout)
    src = open_source(path)
    read = sample_reader(src, "x")
    assert isinstance(read, DirectReader) is direct
    for index in (0, 2, 3, 6, -1, slice(0, 7), slice(2, 5), slice(5, 7), slice(0, 7, 2), slice(4, 4)):
        got, want = read(index), X[index]
        assert got.dtype.isnative and got.shape == want.shape and np.array_equal(got, want), index
    src.close()


def test_npy_and_netcdf3_reads(tmp_path):
    from scipy.io import netcdf_file

    np.save(tmp_path / "c.npy", X)
    np.save(tmp_path / "f.npy", np.asfortranarray(X))
    for name in ("c", "f"):
        src = open_source(tmp_path / f"{name}.npy")
        read = sample_reader(src, name)
        assert np.array_equal(read(3), X[3]) and np.array_equal(read(slice(1, 6)), X[1:6])
        src.close()
    with netcdf_file(tmp_path / "n.nc", "w") as f:
        f.createDimension("t", None)  # unlimited: "r" is a record variable
        f.createDimension("s", 7)
        f.createDimension("a", 3)
        f.createDimension("b", 4)
        f.createVariable("x", "f", ("s", "a", "b"))[:] = X
        f.createVariable("r", "f", ("t", "a", "b"))[:] = X
        f.createVariable("q", "d", ("t",))[:] = np.arange(7.0)
    src = open_source(tmp_path / "n.nc")  # big-endian: swapped in the copy out of the map
    for v in ("x", "r"):
        read = sample_reader(src, v)
        a, b = read(5), read(slice(2, 7))
        assert a.dtype.isnative and a.flags.c_contiguous and np.array_equal(a, X[5])
        assert np.array_equal(b, X[2:7])
        del read
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no array of the map may outlive the readers
        src.close()


def _datasets(tmp_path):
    """Three HDF5 files (uncompressed, gzip, big-endian) and a Zarr store of the same samples."""
    paths = []
    for k, kw in enumerate(({"chunks": (2, 3, 4)}, {"chunks": (1, 3, 4), "compression": "gzip"},
                            {"dtype": ">f4"})):
        paths.append(_write_h5(tmp_path / f"p{k}.h5", **kw))
    out = [FileDataset(paths, ["x", "y"], dtypes={"y": torch.int64})]
    zarr = pytest.importorskip("zarr", reason="zarr is not installed")
    z = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    make = getattr(z, "create_array", None) or z.create_dataset
    make("x", shape=X.shape, chunks=(1, 3, 4), dtype="f4")[:] = X
    make("y", shape=(7,), chunks=(1,), dtype="i2")[:] = np.arange(7)
    out.append(FileDataset(tmp_path / "s.zarr", ["x", "y"], dtypes={"y": torch.int64}))
    return out


def test_batched_reads_and_readahead_return_what_single_reads_return(tmp_path):
    for ds in _datasets(tmp_path):
        n = len(ds)
        want = [tuple(t.clone() for t in FileDataset(ds.paths, ds.variables, ds.dtypes,
                                                      readahead=0)[i]) for i in range(n)]
        assert all(torch.equal(a[0], torch.from_numpy(X[i % 7])) for i, a in enumerate(want))
        # batches with runs, repeats, file boundaries and any order
        rng = np.random.default_rng(0)
        for idx in (list(range(min(n, 9))), [5, 5, 4, 6, 0, n - 1, 6],
                    rng.integers(0, n, 12).tolist(), [n - 1]):
            got = ds.__getitems__(idx)
            assert len(got) == len(idx)
            for i, g in zip(idx, got, strict=True):
                assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(g, want[i], strict=True))
            g0 = got[idx.index(idx[0])][0]
            for pos, i in enumerate(idx):  # a repeated index never shares tensors
                if i == idx[0] and pos != 0:
                    assert got[pos][0].data_ptr() != g0.data_ptr()
        # in order (read-ahead where the format wants it), with an in-place transform
        ds.transform = lambda s: (s[0].mul_(2), s[1])
        for _ in range(2):
            for i in range(n):
                assert torch.equal(ds[i][0], 2 * want[i][0])
        ds.transform = None
        loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=0,
                            generator=torch.Generator().manual_seed(0))
        seen = torch.cat([b[1] for b in loader])
        assert sorted(seen.tolist()) == sorted(w[1].item() for w in want)


def test_max_open_bounds_the_handles(tmp_path):
    ds = _datasets(tmp_path)[0]
    assert ds.read_paths(0) == {"x": "direct", "y": "direct"}
    assert ds.read_paths(1) == {"x": "hdf5", "y": "direct"}  # gzip: through h5py
    ds.max_open = 2
    for i in range(len(ds)):
        torch.testing.assert_close(ds[i][0], torch.from_numpy(X[i % 7]))
        assert len(ds._open) <= 2


def test_a_wrong_layout_is_caught_by_the_check_against_the_library(tmp_path):
    path = _write_h5(tmp_path / "a.h5", chunks=(1, 3, 4))
    src = open_source(path)
    ds = src._dataset("x")
    good = DirectReader(path, X.shape, X.dtype, 1,
                        lambda j: ds.id.get_chunk_info_by_coord((j, 0, 0)).byte_offset)
    bad = DirectReader(path, X.shape, X.dtype, 1,
                       lambda j: ds.id.get_chunk_info_by_coord((j, 0, 0)).byte_offset + 4)
    assert good.agrees_with(ds.__getitem__) and not bad.agrees_with(ds.__getitem__)
    good.close()
    src.close()


def _fds_on(path):
    """Open descriptors of this process on ``path`` (Linux /proc)."""
    fd_dir = Path("/proc/self/fd")
    out = 0
    for fd in fd_dir.iterdir():
        try:
            out += Path(os.readlink(fd)) == path.resolve()
        except OSError:
            pass
    return out


def test_a_files_direct_readers_share_one_descriptor_and_check_only_the_first_sample(tmp_path):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("counts descriptors through /proc")
    path = _write_h5(tmp_path / "a.h5", chunks=(2, 3, 4))  # "y" is contiguous
    src = open_source(path)
    library_only = _fds_on(path)
    rx, ry = sample_reader(src, "x"), sample_reader(src, "y")
    assert isinstance(rx, DirectReader) and isinstance(ry, DirectReader)
    assert rx.file is ry.file
    # the check at open read block 0 only: no seek to the end of a cold file
    assert set(rx._offsets) == {0} and set(ry._offsets) == {0}
    for i in range(7):
        assert np.array_equal(rx(i), X[i]) and ry(i) == i
    assert np.array_equal(rx(slice(1, 6)), X[1:6])
    assert _fds_on(path) == library_only + 1  # one descriptor for both variables
    src.close()
    assert not rx.file.is_open and _fds_on(path) == 0


def test_blocks_whose_stored_size_disagrees_are_read_through_the_library(tmp_path):
    path = _write_h5(tmp_path / "a.h5", chunks=(1, 3, 4))
    src = open_source(path)
    ds = src._dataset("x")

    def offset(j):  # a wrong layout: blocks of 2 samples over chunks of 1
        return ds.id.get_chunk_info_by_coord((j, 0, 0)).byte_offset

    def size(j):
        return ds.id.get_chunk_info_by_coord((j, 0, 0)).size

    unchecked = DirectReader(path, X.shape, X.dtype, 2, offset)
    # sample 0 agrees (chunks 0 and 1 are adjacent), later ones do not: the value check
    # alone misses this layout, the stored block sizes catch it
    assert unchecked.agrees_with(ds.__getitem__) and not np.array_equal(unchecked(2), X[2])
    assert not DirectReader(path, X.shape, X.dtype, 2, offset, block_bytes=size
                            ).agrees_with(ds.__getitem__)
    unchecked.close()
    # a right layout whose block 1 reports a wrong size: only that block goes to the library
    calls = []

    def library(index):
        calls.append(index)
        return ds[index]

    good = DirectReader(path, X.shape, X.dtype, 1, offset,
                        block_bytes=lambda j: size(j) + (j == 1))
    assert good.agrees_with(library)
    calls.clear()
    got = [good(i) for i in range(7)] + [good(slice(0, 7)), good(slice(2, 5)), good(slice(1, 3))]
    assert all(np.array_equal(g, X[i]) for i, g in enumerate(got[:7]))
    assert np.array_equal(got[7], X) and np.array_equal(got[8], X[2:5])
    assert np.array_equal(got[9], X[1:3])
    assert calls == [1, slice(0, 7), slice(1, 3)]  # the reads that include block 1
    good.close()
    src.close()


def test_the_chunk_index_is_read_whole_when_warm_and_per_chunk_when_cold(tmp_path):
    from scidl.data.formats import _h5_layout

    path = _write_h5(tmp_path / "a.h5", chunks=(2, 3, 4))
    with h5py.File(path, "r") as f:
        ds = f["x"]
        asked = []

        def probe(answer):
            def cached(offset):
                asked.append(offset)
                return answer
            return cached

        table = _h5_layout(ds, probe(True))
        per_chunk = _h5_layout(ds, probe(False))
        unknown = _h5_layout(ds, probe(None))
        # without h5py's one-pass chunk iterator (h5py < 3.8 or HDF5 < 1.12.3, as in
        # h5py 3.8's own wheel) a warm file is looked up chunk by chunk too
        whole = WHOLE_INDEX
        assert (table.index, per_chunk.index, unknown.index) == (whole, "per chunk", whole)
        first = ds.id.get_chunk_info_by_coord((0, 0, 0))
        assert asked == [first.byte_offset + first.size - 1] * 3  # the end of chunk 0
        for j in range(4):  # the same offsets and sizes either way
            info = ds.id.get_chunk_info_by_coord((2 * j, 0, 0))
            for lay in (table, per_chunk, _h5_layout(ds, index="per chunk")):
                assert (lay.offset(j), lay.nbytes(j)) == (info.byte_offset, 2 * 3 * 4 * 4)
        assert _h5_layout(f["y"], probe(False)).index == "contiguous"
        with pytest.raises(ValueError, match="index"):
            _h5_layout(ds, index="sometimes")


def test_a_file_out_of_the_page_cache_is_read_with_per_chunk_lookups(tmp_path):
    big = np.arange(8 * 16 * 32 * 32, dtype=np.float32).reshape(8, 16, 32, 32)  # 64 KiB a sample
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=big, chunks=(1, 16, 32, 32))
        f.create_dataset("y", data=np.arange(8, dtype=np.int16))
    src = open_source(path)
    warm = src._file.cached(0)
    src.close()

    def evict():  # drop the file's clean pages from the page cache
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)

    evict()
    src = open_source(path)
    if warm is not True:
        src.close()
        pytest.skip("this file system does not say what is in the page cache")
    # no probe of our own before the reader's: a probe that misses starts the kernel's
    # read of that place, and the reader would then find it cached
    read = sample_reader(src, "x")
    assert isinstance(read, DirectReader)
    if read.index != "per chunk":
        src.close()
        pytest.skip("the file stayed in the page cache (POSIX_FADV_DONTNEED kept it)")
    assert sample_reader(src, "y").index == "contiguous"
    assert np.array_equal(read(slice(0, 8)), big) and np.array_equal(read(5), big[5])
    src.close()
    src = open_source(path)  # now in the cache: the whole index at open
    assert sample_reader(src, "x").index == WHOLE_INDEX
    src.close()
    ds = FileDataset([path], ["x", "y"])
    assert ds.chunk_index(0) == {"x": WHOLE_INDEX, "y": "contiguous"}
    ds.close()
    evict()
    assert ds.chunk_index(0) == {"x": "per chunk", "y": "contiguous"}
    assert torch.equal(ds[7][0], torch.from_numpy(big[7]))
    ds.close()


@pytest.mark.timeout(60)
def test_thread_prefetcher_keeps_order_stops_early_and_raises(tmp_path):
    from scidl.data.loading import ThreadPrefetcher

    ds = _datasets(tmp_path)[0]
    loader = DataLoader(ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(1))
    want = [b[1].tolist() for b in DataLoader(ds, batch_size=4, shuffle=True,
                                              generator=torch.Generator().manual_seed(1))]
    pre = ThreadPrefetcher(loader, depth=2)
    assert len(pre) == len(want) and [b[1].tolist() for b in pre] == want
    for _b in pre:  # leaving early stops the thread
        break
    import threading
    import time

    deadline = time.monotonic() + 5
    while any(t.name == "scidl-read-ahead" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "scidl-read-ahead" for t in threading.enumerate())

    def broken():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(ThreadPrefetcher(broken()))
