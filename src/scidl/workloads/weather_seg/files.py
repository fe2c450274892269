"""``weather_seg`` from files: synthetic CAM5-like fields written to HDF5 / netCDF-4 files.

:func:`write_weather_files` writes ``DIR/train/`` and ``DIR/val/`` (``scidl data
write-weather DIR``); ``scidl train weather_seg task.data_dir=DIR`` then trains from the
files through :class:`scidl.data.FileDataset` instead of generating data in memory.

Each file holds ``samples_per_file`` samples (DeepCAM uses one per file)::

    fields  float32 [sample, channel, lat, lon]  16 channels, chunked one sample at a time
    labels  uint8   [sample, lat, lon]           0 background, 1 cyclone, 2 river

Channels follow the CAM5 variables of the DeepCAM data set: the first three are the
fields the labels are drawn from (``PSL`` pressure anomaly, ``TMQ`` moisture, ``U850``
here the wind speed; :func:`~scidl.workloads.weather_seg.data.make_weather`), the other
13 are smooth fields mixed from them plus their own noise (correlated, less informative
inputs, as in the real data). ``.nc`` files are netCDF-4 (HDF5 storage) with named
dimensions (HDF5 dimension scales). ``DIR/meta.json`` records the settings, the training
label counts (class weights) and the tuned heuristic's thresholds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scidl.data.files import FileDataset, find_files
from scidl.data.formats import DataError, open_source, require
from scidl.workloads.weather_seg.data import (
    CLASSES,
    make_weather,
    smooth_field,
    tune_thresholds,
)

CHANNELS = ("PSL", "TMQ", "U850", "V850", "UBOT", "VBOT", "QREFHT", "PS", "T200", "T500",
            "PRECT", "TS", "TREFHT", "Z1000", "Z200", "ZBOT")
META = "meta.json"


def sample_fields(n: int, size: int, seed: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples of all 16 channels ``[n, 16, size, size]`` and labels ``[n, size, size]``."""
    x3, y = make_weather(n, size, seed=seed, noise=noise)
    g = torch.Generator().manual_seed(seed + 7919)
    mix = torch.randn(len(CHANNELS) - 3, 3, generator=g) / math.sqrt(3)
    extra = torch.einsum("kc,nchw->nkhw", mix, x3)
    extra = extra + 0.7 * smooth_field(n * extra.shape[1], size, size / 12, g).view_as(extra)
    return torch.cat([x3, extra], 1).float(), y


def write_weather_files(out: str | Path, n_train: int = 512, n_val: int = 128, size: int = 48,
                        seed: int = 0, noise: float = 0.3, samples_per_file: int = 16,
                        fmt: str = "nc", compression: str | None = None) -> dict[str, Any]:
    """Write the training and validation files under ``out``; returns the metadata."""
    h5py = require("h5py", "writing weather_seg files")
    if fmt not in ("nc", "h5"):
        raise DataError(f"format must be nc or h5 (got {fmt!r})")
    if size % 4:
        raise DataError(f"size must be divisible by 4 (got {size})")
    root = Path(out)
    if (root / META).exists() or (root.exists() and any(root.iterdir())):
        raise DataError(f"{root} is not empty: write weather files into a new folder")
    counts = torch.zeros(len(CLASSES), dtype=torch.int64)
    tune: list[tuple[torch.Tensor, torch.Tensor]] = []
    for split, n, split_seed in (("train", n_train, 2 * seed + 1), ("val", n_val, 2 * seed + 2)):
        (root / split).mkdir(parents=True)
        for k, start in enumerate(range(0, n, samples_per_file)):
            m = min(samples_per_file, n - start)
            x, y = sample_fields(m, size, seed=split_seed * 100_003 + k, noise=noise)
            _write_one(h5py, root / split / f"weather_{k:05d}.{fmt}", x, y, fmt, compression)
            if split == "train":
                counts += torch.bincount(y.flatten(), minlength=len(CLASSES))
                if sum(len(t[0]) for t in tune) < 256:
                    tune.append((x[:, :3], y))
    x_t, y_t = (torch.cat(t)[:256] for t in zip(*tune, strict=True))
    meta = {"n_train": n_train, "n_val": n_val, "size": size, "seed": seed, "noise": noise,
            "samples_per_file": samples_per_file, "format": fmt, "channels": list(CHANNELS),
            "label_counts": counts.tolist(), "thresholds": list(tune_thresholds(x_t, y_t))}
    (root / META).write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def _write_one(h5py: Any, path: Path, x: torch.Tensor, y: torch.Tensor, fmt: str,
               compression: str | None) -> None:
    n, c, h, w = x.shape
    tmp = path.with_suffix(path.suffix + ".part")
    with h5py.File(tmp, "w") as f:
        fields = f.create_dataset("fields", data=x.numpy(), chunks=(1, c, h, w),
                                  compression=compression)
        labels = f.create_dataset("labels", data=y.numpy().astype(np.uint8), chunks=(1, h, w),
                                  compression=compression)
        fields.attrs["channels"] = ",".join(CHANNELS)
        labels.attrs["classes"] = ",".join(CLASSES)
        if fmt == "nc":  # netCDF-4: named dimensions as HDF5 dimension scales
            dims = {"sample": np.arange(n), "channel": np.arange(c), "lat": np.arange(h),
                    "lon": np.arange(w)}
            for name, values in dims.items():
                f.create_dataset(name, data=values.astype(np.int32))
                f[name].make_scale(name)
            for ds, names in ((fields, ("sample", "channel", "lat", "lon")),
                              (labels, ("sample", "lat", "lon"))):
                for i, name in enumerate(names):
                    ds.dims[i].attach_scale(f[name])
    tmp.replace(path)


def read_meta(data_dir: str | Path) -> dict[str, Any]:
    """``DIR/meta.json``, or a one-line error saying how to write the files."""
    p = Path(data_dir) / META
    if not p.is_file():
        raise DataError(f"task.data_dir={data_dir} holds no weather_seg files ({META} missing); "
                        f"write them with: scidl data write-weather {data_dir}")
    return json.loads(p.read_text())


def train_dataset(data_dir: str | Path) -> FileDataset:
    """The training files as a lazily opened dataset of ``(fields, labels)``."""
    return FileDataset(find_files(Path(data_dir) / "train"), ["fields", "labels"],
                       dtypes={"labels": torch.int64})


def load_split(data_dir: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split in memory (validation; the in-memory comparison in benchmarks)."""
    xs, ys = [], []
    for path in find_files(Path(data_dir) / split):
        src = open_source(path)
        try:
            xs.append(torch.from_numpy(src.read("fields", slice(None))))
            ys.append(torch.from_numpy(src.read("labels", slice(None)).astype(np.int64)))
        finally:
            src.close()
    return torch.cat(xs), torch.cat(ys)
