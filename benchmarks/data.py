"""Input pipeline: SciDL's file datasets against plain reads, and training from disk
against training from memory, both as paired interleaved ratios.

Part 1, read throughput. The same samples (``[16, size, size]`` float32 fields and
``[size, size]`` uint8 labels, as weather_seg's files hold them) are written in each
format: HDF5 (h5py) and netCDF-4 (h5netcdf where installed, else h5py with dimension
scales), both chunked one sample at a time, Zarr (if installed), a folder of ``.npy``
files and netCDF-3 (scipy). Each pair reads every sample once, one at
a time in order, through ``scidl.data.FileDataset`` and through the plain loop anyone
would write with the format's own library (``h5py``: ``f["fields"][i]``;
``np.array(np.load(..., mmap_mode="r")[i])``; ...), in alternating order. Both sides
deliver arrays of their own in memory, in native byte order (a memory-mapped view is
copied out; netCDF-3's big-endian values are converted in that copy), and before the
timed pairs one untimed pass of each checks that they deliver the same values (CRC-32
over every array). Figure: median over pairs of SciDL's throughput ÷ the plain loop's
(target ≥ 0.9). A bulk read of whole arrays is timed too, as the ceiling.

Part 2, training step time. weather_seg's U-Net trains the same steps on the same files
either from the samples held in memory (``num_workers=0``) or from the files, read by
``train.num_workers`` DataLoader worker processes (``--workers``) or by one thread of the
training process (``scidl.data.ThreadPrefetcher``, no worker process); each round runs
memory and every disk setting once, in alternating order. A step's time is the interval
between consecutive step ends (data waiting included; the first 3 steps left out);
figure: median over rounds of disk ÷ memory of each run's median step (target ≤ 1.05).

Page cache: with ``--drop-caches`` the cache is dropped (``echo 3 >
/proc/sys/vm/drop_caches``, needs root) before every timed read and run, and the JSON
records whether that worked; without it the files are warm (just written and read).
The load average is recorded; on a shared machine rerun on a quiet one.

    python benchmarks/data.py [--size 48] [--samples 256] [--pairs 7] [--steps 60]
                              [--workers 1 2] [--no-thread] [--drop-caches]

Writes benchmarks/results/data.json; ``python scripts/render_docs.py`` renders it into
docs/data.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "data.json"


# ----------------------------------------------------------------------------- caches
def _model_line() -> str:
    """The U-Net the training part runs: weather_seg's task defaults."""
    from scidl.config import load_config

    t = load_config("weather_seg").task
    return f"weather_seg U-Net (task defaults: base {t['base']}, depth {t['depth']}), 16 input channels"


def drop_caches() -> str:
    """'dropped', or why not (the JSON records it)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "dropped"
    except OSError as e:
        return f"not permitted ({e.strerror or e})"


# ----------------------------------------------------------------------------- part 1
def write_formats(root: Path, x: np.ndarray, y: np.ndarray) -> dict[str, Path]:
    """The same samples in every format this machine can write; name -> path."""
    import h5py

    out: dict[str, Path] = {}
    n, c, h, w = x.shape
    with h5py.File(root / "samples.h5", "w") as f:
        f.create_dataset("fields", data=x, chunks=(1, c, h, w))
        f.create_dataset("labels", data=y, chunks=(1, h, w))
    out["hdf5"] = root / "samples.h5"
    out["netcdf4"] = write_netcdf4(root / "samples.nc", x, y)
    try:
        import zarr

        z = zarr.open_group(str(root / "samples.zarr"), mode="w")
        for key, a, chunks in (("fields", x, (1, c, h, w)), ("labels", y, (1, h, w))):
            make = getattr(z, "create_array", None) or z.create_dataset
            make(key, shape=a.shape, chunks=chunks, dtype=a.dtype)[:] = a
        out["zarr"] = root / "samples.zarr"
    except ImportError:
        pass
    (root / "npy").mkdir()
    np.save(root / "npy" / "fields.npy", x)
    np.save(root / "npy" / "labels.npy", y)
    out["npy"] = root / "npy"
    from scipy.io import netcdf_file

    with netcdf_file(root / "samples3.nc", "w") as f:
        for d, size in zip(("sample", "channel", "lat", "lon"), x.shape, strict=True):
            f.createDimension(d, size)
        f.createVariable("fields", "f", ("sample", "channel", "lat", "lon"))[:] = x
        f.createVariable("labels", "b", ("sample", "lat", "lon"))[:] = y.astype(np.int8)
    out["netcdf3"] = root / "samples3.nc"
    return out


def write_netcdf4(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """A netCDF-4 file of the samples, chunked one sample at a time: written by h5netcdf
    (the netCDF-4 writer xarray uses) where installed, else by h5py with the variables'
    dimensions as HDF5 dimension scales (as ``scidl data write-weather`` writes them)."""
    n, c, h, w = x.shape
    dims = {"sample": n, "channel": c, "lat": h, "lon": w}
    shapes = (("fields", x, ("sample", "channel", "lat", "lon")), ("labels", y, ("sample", "lat", "lon")))
    try:
        import h5netcdf
    except ImportError:
        import h5py

        with h5py.File(path, "w") as f:
            for dim, size in dims.items():
                f.create_dataset(dim, data=np.arange(size, dtype=np.int32))
                f[dim].make_scale(dim)
            for name, a, names in shapes:
                ds = f.create_dataset(name, data=a, chunks=(1, *a.shape[1:]))
                for i, dim in enumerate(names):
                    ds.dims[i].attach_scale(f[dim])
        return path
    with h5netcdf.File(path, "w") as f:
        f.dimensions = dims
        for name, a, names in shapes:
            f.create_variable(name, names, a.dtype, chunks=(1, *a.shape[1:]))[...] = a
    return path


def plain_reader(fmt: str, path: Path) -> tuple[Callable[..., int], Callable[[], int]]:
    """(one sample at a time, whole arrays): plain reads with the format's own library.

    Each delivers what a training loop needs, arrays of its own in memory in native byte
    order: a memory map is copied out (``np.array``; a view would not read the bytes)
    and netCDF-3's big-endian values are converted in the same copy. Each returns the
    bytes read; ``seq(check)`` calls ``check`` with every array (the untimed content
    check)."""
    def per_sample(get: Callable[[str], Any], n: int, check: Callable[[Any], None] | None) -> int:
        total = 0
        for i in range(n):
            for k in ("fields", "labels"):
                a = get(k)[i]
                total += a.nbytes
                if check is not None:
                    check(a)
        return total

    if fmt in ("hdf5", "netcdf4"):
        import h5py

        def seq(check: Callable[[Any], None] | None = None) -> int:
            with h5py.File(path, "r") as f:
                ds = {k: f[k] for k in ("fields", "labels")}
                return per_sample(ds.__getitem__, ds["fields"].shape[0], check)

        def bulk() -> int:
            with h5py.File(path, "r") as f:
                return f["fields"][:].nbytes + f["labels"][:].nbytes
    elif fmt == "zarr":
        import zarr

        def seq(check: Callable[[Any], None] | None = None) -> int:
            z = zarr.open_group(str(path), mode="r")
            ds = {k: z[k] for k in ("fields", "labels")}
            return per_sample(ds.__getitem__, ds["fields"].shape[0], check)

        def bulk() -> int:
            z = zarr.open_group(str(path), mode="r")
            return z["fields"][:].nbytes + z["labels"][:].nbytes
    elif fmt == "npy":
        def seq(check: Callable[[Any], None] | None = None) -> int:
            ds = {k: np.load(path / f"{k}.npy", mmap_mode="r") for k in ("fields", "labels")}
            return per_sample(lambda k: _Copying(ds[k]), ds["fields"].shape[0], check)

        def bulk() -> int:
            return sum(np.load(path / f"{k}.npy").nbytes for k in ("fields", "labels"))
    else:  # netcdf3
        from scipy.io import netcdf_file

        def seq(check: Callable[[Any], None] | None = None) -> int:
            with netcdf_file(str(path), "r", mmap=True) as f:
                ds = {k: f.variables[k].data for k in ("fields", "labels")}
                total = per_sample(lambda k: _Copying(ds[k]), ds["fields"].shape[0], check)
                del ds
                return total

        def bulk() -> int:
            with netcdf_file(str(path), "r", mmap=False) as f:
                return sum(_Copying(f.variables[k].data)[:].nbytes for k in ("fields", "labels"))
    return seq, bulk


class _Copying:
    """Index a memory map the way a training loop must: a copy of each sample, in native
    byte order (one pass: the copy converts)."""

    def __init__(self, a: np.ndarray) -> None:
        self.a = a
        self.native = a.dtype.newbyteorder("=")

    def __getitem__(self, i: Any) -> np.ndarray:
        return np.array(self.a[i], dtype=self.native)


def scidl_reader(path: Path) -> Callable[..., int]:
    """Reads through a FileDataset built beforehand (as a task builds it once); the
    file is opened inside the timing, on first use, as the plain loop opens it."""
    from scidl.data import FileDataset

    built = FileDataset([path], ["fields", "labels"])

    def seq(check: Callable[[Any], None] | None = None) -> int:
        ds = built
        total = 0
        for i in range(len(ds)):
            for t in ds[i]:
                total += t.nbytes  # as the plain loop counts a.nbytes
                if check is not None:
                    check(t.numpy())
        seq.index.update(ds.chunk_index(0).values())  # type: ignore[attr-defined]
        ds.close()
        return total

    seq.index = set()  # type: ignore[attr-defined]  # how the chunk index was read, each pass
    return seq


def content_crc(reader: Callable[..., int]) -> tuple[int, int]:
    """(bytes, CRC-32 of every array's values in native order) of one untimed pass."""
    import zlib

    crc = [0]

    def check(a: Any) -> None:
        assert a.dtype.isnative and a.flags.writeable and not isinstance(a, np.memmap)
        crc[0] = zlib.crc32(np.ascontiguousarray(a).view(np.uint8), crc[0])

    nbytes = reader(check)
    return nbytes, crc[0]


def timed(fn: Callable[[], int], drop: bool) -> tuple[float, int, str]:
    state = drop_caches() if drop else "not dropped"
    t0 = time.perf_counter()
    nbytes = fn()
    return time.perf_counter() - t0, nbytes, state


def read_part(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    g = np.random.default_rng(0)
    x = g.standard_normal((args.samples, 16, args.size, args.size), dtype=np.float32)
    y = g.integers(0, 3, (args.samples, args.size, args.size), dtype=np.uint8)
    rows, cache = [], set()
    for fmt, path in write_formats(root, x, y).items():
        seq, bulk = plain_reader(fmt, path)
        ours = scidl_reader(path)
        # untimed: imports and first-touch costs out of the pairs, and both sides must
        # deliver the same values (CRC-32 over every array)
        if content_crc(ours) != content_crc(seq):
            raise SystemExit(f"{fmt}: SciDL's reads and the plain reads differ")
        ratios, t_ours, t_plain, t_bulk = [], [], [], []
        nbytes = 0
        ours.index.clear()  # type: ignore[attr-defined]  # the timed passes' only
        for k in range(args.pairs):
            order = [("scidl", ours), ("plain", seq)]
            got: dict[str, float] = {}
            for name, fn in order if k % 2 == 0 else order[::-1]:
                dt, nbytes, state = timed(fn, args.drop_caches)
                cache.add(state)
                got[name] = dt
            t_ours.append(got["scidl"])
            t_plain.append(got["plain"])
            ratios.append(got["plain"] / got["scidl"])  # throughput ratio: SciDL ÷ plain
            dt, _, state = timed(bulk, args.drop_caches)
            t_bulk.append(dt)
        from scidl.data import FileDataset

        probe = FileDataset([path], ["fields", "labels"])
        kinds = probe.read_paths(0)
        probe.close()
        reads = "direct" if set(kinds.values()) == {"direct"} else \
            ", ".join(sorted(set(kinds.values()))) + (" + read-ahead" if fmt == "zarr" else "")
        if ours.index:  # type: ignore[attr-defined]
            reads += " (chunk index: " + ", ".join(sorted(ours.index)) + ")"  # type: ignore[attr-defined]
        rows.append({"format": fmt, "scidl_reads": reads, "bytes": nbytes, "pairs": args.pairs,
                     "scidl_mb_s": nbytes / statistics.median(t_ours) / 1e6,
                     "plain_mb_s": nbytes / statistics.median(t_plain) / 1e6,
                     "bulk_mb_s": nbytes / statistics.median(t_bulk) / 1e6,
                     "ratio_median": statistics.median(ratios),
                     "ratio_q1_q3": _quartiles(ratios)})
    missing = [f for f in ("zarr",) if f not in {r["format"] for r in rows}]
    return {"rows": rows, "samples": args.samples, "sample_shape": [16, args.size, args.size],
            "skipped": {f: "package not installed" for f in missing}, "cache": sorted(cache)}


def _quartiles(v: list[float]) -> list[float]:
    if len(v) < 2:
        return [v[0], v[0]]
    q = statistics.quantiles(v, n=4)
    return [q[0], q[2]]


# ----------------------------------------------------------------------------- part 2
class _StepClock:
    """Wall and training-process CPU time (all its threads, not worker processes) at
    every step end."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.cpu: list[float] = []

    def on_step_end(self, trainer: Any, row: dict[str, Any]) -> None:
        self.ends.append(time.perf_counter())
        self.cpu.append(time.process_time())


def _median_step(ends: list[float], skip: int = 3) -> float:
    gaps = np.diff(ends)[skip:]
    return float(np.median(gaps))


def disk_modes(args: argparse.Namespace) -> list[str]:
    """The disk-side settings compared with memory: ``workers=W`` (W DataLoader worker
    processes) and ``thread`` (no worker process: batches read one thread ahead)."""
    return [f"workers={w}" for w in args.workers] + (["thread"] if args.thread else [])


def train_part(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    import torch  # noqa: F401  (imported here: rendering the docs needs no torch)
    from torch.utils.data import TensorDataset

    from scidl.config import load_config
    from scidl.data.loading import ThreadPrefetcher
    from scidl.runtime.dist import distributed_context
    from scidl.runtime.seed import seed_everything
    from scidl.train.api import build_task
    from scidl.train.trainer import Trainer
    from scidl.workloads import BuildContext
    from scidl.workloads.weather_seg.files import load_split, write_weather_files

    class ThreadReadTrainer(Trainer):
        """The trainer with its epoch loader (num_workers=0) iterated one thread ahead."""

        def _loader(self) -> Any:
            return ThreadPrefetcher(super()._loader(), depth=2)

    data_dir = root / "weather"
    n_train = args.batch * (args.steps + 2)
    write_weather_files(data_dir, n_train=n_train, n_val=16, size=args.size,
                        samples_per_file=args.samples_per_file, fmt="nc")
    in_memory = TensorDataset(*load_split(data_dir, "train"))
    modes = disk_modes(args)
    cache: set[str] = set()
    with distributed_context(device="cpu", backend="gloo") as dctx:
        def run(mode: str, k: int) -> tuple[float, float]:
            workers = int(mode.split("=")[1]) if mode.startswith("workers=") else 0
            over = ["log.tensorboard=false", "log.progress=false", "log.pictures=false",
                    f"log.run_dir={root / f'run_{mode}_{k}'}",
                    f"task.data_dir={data_dir}", f"train.batch_size={args.batch}",
                    f"train.max_steps={args.steps}", "train.eval_every=100000",
                    "checkpoint.final=false", "checkpoint.best=false",
                    f"train.num_workers={workers}"]
            cfg = load_config("weather_seg", overrides=over)
            task = build_task(cfg, BuildContext(seed=0), None)
            if mode == "memory":
                task.train_data = in_memory
            seed_everything(1)
            clock = _StepClock()
            state = drop_caches() if args.drop_caches else "not dropped"
            cache.add(state)
            cls = ThreadReadTrainer if mode == "thread" else Trainer
            cls(cfg, task, dctx, Path(cfg.log.run_dir), [clock]).fit()
            return _median_step(clock.ends), _median_step(clock.cpu)

        for mode in ["memory", *modes]:
            run(mode, -1)  # warm-up: imports, first fork
        times: dict[str, list[float]] = {m: [] for m in ["memory", *modes]}
        cpu: dict[str, list[float]] = {m: [] for m in ["memory", *modes]}
        for k in range(args.pairs):  # one round: memory and every disk mode, order alternating
            order = ["memory", *modes]
            for mode in order if k % 2 == 0 else order[::-1]:
                wall, used = run(mode, k)
                times[mode].append(wall)
                cpu[mode].append(used)
    rows = []
    for mode in modes:
        ratios = [d / m for d, m in zip(times[mode], times["memory"], strict=True)]
        rows.append({"mode": mode, "pairs": args.pairs,
                     "num_workers": int(mode.split("=")[1]) if mode.startswith("workers=") else 0,
                     "disk_step_ms": 1e3 * statistics.median(times[mode]),
                     "memory_step_ms": 1e3 * statistics.median(times["memory"]),
                     "disk_cpu_ms": 1e3 * statistics.median(cpu[mode]),
                     "memory_cpu_ms": 1e3 * statistics.median(cpu["memory"]),
                     "ratio_median": statistics.median(ratios),
                     "ratio_q1_q3": _quartiles(ratios)})
    return {"rows": rows, "steps": args.steps, "batch": args.batch, "size": args.size,
            "samples_per_file": args.samples_per_file, "format": "netCDF-4 (.nc)",
            "model": _model_line(),
            "cache": sorted(cache)}


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--samples", type=int, default=256, help="samples per format (part 1)")
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--steps", type=int, default=60, help="training steps per run (part 2)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--samples-per-file", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-thread", dest="thread", action="store_false",
                    help="leave out the reading-thread setting")
    ap.add_argument("--drop-caches", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="scidl_data_bench_") as tmp:
        root = Path(tmp)
        (root / "read").mkdir()
        read = read_part(args, root / "read")
        train = train_part(args, root)
    result = {
        "benchmark": "data", "command": "python benchmarks/data.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__,
                    "loadavg_before": [round(v, 2) for v in load_before],
                    "loadavg_after": [round(v, 2) for v in os.getloadavg()]},
        "page_cache": "dropped before every timed read and run" if args.drop_caches
        else "not dropped: files warm (written, then read once before timing)",
        "read": read, "train": train,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(render(result))
    return 0


# ----------------------------------------------------------------------------- docs
def _table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _mode_words(row: dict[str, Any]) -> str:
    mode = row.get("mode", f"workers={row['num_workers']}")
    if mode == "thread":
        return "a reading thread, no worker process (`ThreadPrefetcher`)"
    w = int(mode.split("=")[1])
    return f"{w} worker process{'es' if w > 1 else ''} (`train.num_workers={w}`)"


def render(d: dict[str, Any]) -> str:
    """The docs/data.md block: read throughput and training step time tables."""
    r, t, m = d["read"], d["train"], d["machine"]
    shape = "x".join(map(str, r["sample_shape"]))
    read_rows = [[row["format"], row.get("scidl_reads", "library"), f"{row['scidl_mb_s']:.0f}",
                  f"{row['plain_mb_s']:.0f}",
                  f"**{row['ratio_median']:.2f}** ({row['ratio_q1_q3'][0]:.2f}–"
                  f"{row['ratio_q1_q3'][1]:.2f})", f"{row['bulk_mb_s']:.0f}"]
                 for row in r["rows"]]
    skipped = "".join(f" {f}: skipped ({why})." for f, why in r["skipped"].items())
    train_rows = [[_mode_words(row), f"{row['disk_step_ms']:.1f}", f"{row['memory_step_ms']:.1f}",
                   f"**{row['ratio_median']:.3f}** ({row['ratio_q1_q3'][0]:.3f}–"
                   f"{row['ratio_q1_q3'][1]:.3f})",
                   f"{row['disk_cpu_ms']:.1f} / {row['memory_cpu_ms']:.1f}" if "disk_cpu_ms" in row
                   else "–"] for row in t["rows"]]
    load = ", ".join(f"{v:g}" for v in m["loadavg_before"])
    read_ok = [row["format"] for row in r["rows"] if row["ratio_median"] >= 0.9]
    train_ok = [_mode_words(row) for row in t["rows"] if row["ratio_median"] <= 1.05]
    verdict = (f"Targets met in this run: read ≥ 0.90 for {', '.join(read_ok) or 'no format'} "
               f"(of {len(r['rows'])}); disk ÷ memory ≤ 1.05 with "
               f"{', '.join(train_ok) or 'no setting'} (of {len(t['rows'])} settings).")
    return "\n".join([
        f"Read throughput, {r['samples']} samples of {shape} float32 fields + uint8 labels, "
        f"one sample at a time in order, median over {r['rows'][0]['pairs'] if r['rows'] else 0} "
        f"interleaved pairs (target: SciDL ÷ plain ≥ 0.90).{skipped}",
        "",
        _table(["format", "SciDL reads through", "SciDL MB/s", "plain loop MB/s",
                "SciDL ÷ plain (IQR)", "bulk read MB/s"], read_rows),
        "",
        f"Training step time, {t['model']}, batch {t['batch']}, {t['size']}x{t['size']} grid, "
        f"{t['steps']} steps a run, {t['format']} files of {t['samples_per_file']} samples, "
        "median over interleaved pairs of runs (target: disk ÷ memory ≤ 1.05).",
        "",
        _table(["reading from disk with", "disk ms/step", "memory ms/step",
                "disk ÷ memory (IQR)", "training-process CPU ms/step, disk / memory"],
               train_rows),
        "",
        f"Page cache: {d['page_cache']}. Machine: {m['cpus']} CPUs, load average {load} at "
        f"the start (1, 5, 15 min); command: `{d['command']}`.",
        "",
        verdict,
    ])


if __name__ == "__main__":
    sys.exit(main())
