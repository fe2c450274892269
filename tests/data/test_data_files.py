"""scidl.data: readers of each format, lazy per-process handles, by-file sharding, staging."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from scidl.config import ConfigError, load_config
from scidl.data import (
    DataError,
    FileDataset,
    ResumableFileSampler,
    build_sampler,
    detect_format,
    find_files,
    open_source,
)
from scidl.data.staging import loader_options, stage_for_rank

h5py = pytest.importorskip("h5py", reason="h5py is not installed (pip install scidl[hdf5])")


def _h5_files(root: Path, n_files=4, per_file=5, chunks=True) -> tuple[list[Path], np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    x = np.arange(n_files * per_file * 6, dtype=np.float32).reshape(n_files * per_file, 2, 3)
    paths = []
    for k in range(n_files):
        p = root / f"part_{k}.h5"
        with h5py.File(p, "w") as f:
            f.create_dataset("grp/x", data=x[k * per_file:(k + 1) * per_file],
                             chunks=(1, 2, 3) if chunks else None)
            f.create_dataset("y", data=np.arange(k * per_file, (k + 1) * per_file))
        paths.append(p)
    return paths, x


def test_each_format_reads_the_same_samples(tmp_path):
    paths, x = _h5_files(tmp_path / "h5")
    ds = FileDataset(tmp_path / "h5", ["grp/x", "y"])
    assert len(ds) == 20 and ds.sizes == [5] * 4 and ds.paths == paths
    for i in (0, 4, 5, 19, -1):
        xi, yi = ds[i]
        assert torch.equal(xi, torch.from_numpy(x[i])) and int(yi) == i % 20
    with pytest.raises(IndexError):
        ds[20]
    # .npy: one file is one variable; a folder of .npy files is one store
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "x.npy", x)
    np.save(tmp_path / "npy" / "y.npy", np.arange(20))
    one = FileDataset([tmp_path / "npy" / "x.npy"], ["x"])
    store = FileDataset(tmp_path / "npy", ["x", "y"])
    assert torch.equal(one[7][0], store[7][0]) and torch.equal(store[7][0], torch.from_numpy(x[7]))
    # netCDF-3 (classic) through scipy
    from scipy.io import netcdf_file

    with netcdf_file(tmp_path / "c.nc", "w") as f:
        f.createDimension("t", 20)
        f.createDimension("a", 2)
        f.createDimension("b", 3)
        f.createVariable("x", "f", ("t", "a", "b"))[:] = x
    assert detect_format(tmp_path / "c.nc") == "netcdf3"
    assert torch.equal(FileDataset([tmp_path / "c.nc"], ["x"])[11][0], torch.from_numpy(x[11]))


def test_zarr_store(tmp_path):
    zarr = pytest.importorskip("zarr", reason="zarr is not installed")
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    root.create_array("x", shape=(6, 4), chunks=(1, 4), dtype="f4") if hasattr(root, "create_array") \
        else root.create_dataset("x", shape=(6, 4), chunks=(1, 4), dtype="f4")
    root["x"][:] = np.arange(24, dtype=np.float32).reshape(6, 4)
    ds = FileDataset(tmp_path / "s.zarr", ["x"])
    assert len(ds) == 6 and ds[2][0].tolist() == [8, 9, 10, 11]


def test_bad_paths_and_missing_packages_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no such file"):
        detect_format(tmp_path / "nope.h5")
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(DataError, match="unknown data format"):
        open_source(tmp_path / "t.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no data files"):
        find_files(tmp_path / "empty")
    _h5_files(tmp_path / "h5", n_files=1)
    with pytest.raises(DataError, match="no variable 'z'"):
        FileDataset(tmp_path / "h5", ["z"])
    # a Zarr store without the zarr package names the package
    (tmp_path / "s.zarr").mkdir()
    (tmp_path / "s.zarr" / ".zgroup").write_text('{"zarr_format": 2}')
    monkeypatch.setitem(__import__("sys").modules, "zarr", None)  # import zarr -> ImportError
    with pytest.raises(DataError, match=r"needs the Python package 'zarr'") as e:
        open_source(tmp_path / "s.zarr")
    assert "\n" not in str(e.value)


def test_handles_are_opened_per_process_and_never_pickled(tmp_path):
    _h5_files(tmp_path)
    ds = FileDataset(tmp_path, ["grp/x", "y"], dtypes={"y": torch.int64})
    ds[3]  # opens file 0 in this process
    assert list(ds._open) == [0]
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._open == {} and torch.equal(copy[3][0], ds[3][0])
    seq = torch.stack([ds[i][0] for i in range(len(ds))])
    loader = DataLoader(ds, batch_size=3, num_workers=2, **{"multiprocessing_context": "fork"})
    got = torch.cat([b[0] for b in loader])  # forked workers reopen their own handles
    assert torch.equal(got, seq)


def test_file_sampler_gives_each_rank_its_own_files_and_resumes(tmp_path):
    sizes = [5, 5, 5, 4, 5]
    shards = [ResumableFileSampler(sizes, 2, r, seed=3) for r in range(2)]
    assert set(shards[0].files).isdisjoint(shards[1].files)
    assert sorted(shards[0].files + shards[1].files) == list(range(5))
    assert shards[0].num_samples == shards[1].num_samples == min(
        sum(sizes[f] for f in s.files) for s in shards)
    s = shards[0]
    s.set_epoch(1)
    full = list(s)
    assert len(full) == s.num_samples and list(s) == full  # same order for the same epoch
    s.set_epoch(2)
    assert list(s) != full  # reshuffled each epoch, files unchanged
    s.set_epoch(1)
    s.set_start(4)
    assert len(s) == s.num_samples - 4 and list(s) == full[4:]
    with pytest.raises(ConfigError, match="every rank needs a file"):
        ResumableFileSampler([5], 2, 0)
    with pytest.raises(ConfigError, match="needs training data read from files"):
        build_sampler(torch.utils.data.TensorDataset(torch.zeros(4)), 1, 0, True, 0, False, "file")


def test_staging_copies_only_this_ranks_files(tmp_path):
    paths, x = _h5_files(tmp_path / "src")
    ds = FileDataset(paths, ["grp/x"])
    sampler = build_sampler(ds, 2, 1, True, 0, False, shard_by="file")
    staged = stage_for_rank(ds, sampler, str(tmp_path / "local"))
    assert sorted(p.name for p in (tmp_path / "local").iterdir()) == \
        sorted(paths[f].name for f in sampler.files)
    for i in sampler:
        assert torch.equal(staged[i][0], ds[i][0])
    assert {staged.paths[f].parent for f in sampler.files} == {tmp_path / "local"}
    assert stage_for_rank(ds, sampler, None) is ds
    with pytest.raises(ConfigError, match="data.stage_dir needs"):
        stage_for_rank(torch.utils.data.TensorDataset(torch.zeros(2)), sampler, str(tmp_path))


def test_loader_options_are_validated():
    for bad, key in ((["train.prefetch_factor=2"], "prefetch_factor"),
                     (["train.persistent_workers=true"], "persistent_workers")):
        with pytest.raises(ConfigError, match=rf"^train\.{key} needs train\.num_workers > 0 \(got 0\)$"):
            load_config("weather_seg", overrides=bad)
    cfg = load_config("weather_seg", overrides=["train.num_workers=2", "train.prefetch_factor=3",
                                                "train.pin_memory=true"])
    opts = loader_options(cfg.train, torch.device("cpu"))
    assert opts == {"num_workers": 2, "pin_memory": False, "persistent_workers": False,
                    "prefetch_factor": 3}
    assert loader_options(cfg.train, torch.device("cuda"))["pin_memory"] is True


def test_packed_netcdf_reads_the_same_through_h5py_and_xarray(tmp_path):
    """CF packing (int16 + scale_factor/add_offset): the HDF5 reader unpacks as xarray does."""
    xr = pytest.importorskip("xarray", reason="xarray is not installed")
    pytest.importorskip("h5netcdf", reason="h5netcdf is not installed")
    rng = np.random.default_rng(0)
    t = (250 + 30 * rng.random((5, 3, 4))).astype(np.float32)
    ds = xr.Dataset({"t2m": (("time", "lat", "lon"), t)})
    enc = {"t2m": {"dtype": "int16", "scale_factor": 0.01, "add_offset": 265.0, "_FillValue": -32767}}
    ds.to_netcdf(tmp_path / "era.nc", engine="h5netcdf", encoding=enc)
    via_h5 = FileDataset(tmp_path / "era.nc", ["t2m"])
    via_xr = FileDataset(tmp_path / "era.nc", ["t2m"], reader="xarray")
    assert len(via_h5) == len(via_xr) == 5
    for i in range(5):
        a, b = via_h5[i][0], via_xr[i][0]
        assert a.is_floating_point() and torch.allclose(a.double(), b.double())  # float type: by version
        assert np.allclose(a.numpy(), t[i], atol=0.006)  # packing resolution 0.01
    info = open_source(tmp_path / "era.nc").variables()["t2m"]
    assert info.shape == (5, 3, 4) and info.dtype.startswith("float")
    with pytest.raises(DataError, match="reader 'grib'"):
        open_source(tmp_path / "era.nc", "grib")
