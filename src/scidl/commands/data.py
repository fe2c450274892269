"""``scidl data``: look into data files (inspect) and write the weather_seg files."""

from __future__ import annotations

import argparse

NAME = "data"
HELP = ("data on disk: inspect PATH (variables, shapes, chunking, read speed), "
        "write-weather DIR (weather_seg's synthetic fields as netCDF/HDF5 files)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scidl.commands.options import HelpFormatter, option

    sub = p.add_subparsers(dest="action", metavar="ACTION")
    ins = sub.add_parser("inspect", formatter_class=HelpFormatter,
                         help="variables, shapes, dtypes, chunking, compression and a measured "
                              "read throughput of an HDF5/netCDF file, Zarr store, .npy file or "
                              "a folder of them")
    ins.add_argument("path", help="file, store or folder")
    option(ins, "--seconds", type=float, default=1.0,
           help="how long to time reading (0: no measurement)")
    option(ins, "--reader", choices=("auto", "hdf5", "zarr", "npy", "netcdf3", "xarray"),
           default="auto", help="auto: detected from the bytes; xarray: CF-decoded through "
                                "xarray's installed backends (also GRIB with cfgrib)")
    wr = sub.add_parser("write-weather", formatter_class=HelpFormatter,
                        help="write weather_seg's 16-channel synthetic fields to DIR/train and "
                             "DIR/val; train on them with task.data_dir=DIR")
    wr.add_argument("dir", help="a new (or empty) folder")
    option(wr, "--format", dest="fmt", choices=("nc", "h5"), default="nc",
           help="netCDF-4 (.nc, named dimensions) or plain HDF5 (.h5)")
    option(wr, "--n-train", type=int, default=512, help="training samples")
    option(wr, "--n-val", type=int, default=128, help="validation samples")
    option(wr, "--size", type=int, default=48, help="grid side in pixels (divisible by 4)")
    option(wr, "--samples-per-file", type=int, default=16, help="samples in each file")
    option(wr, "--seed", type=int, default=0, help="seed of the synthetic fields")
    option(wr, "--noise", type=float, default=0.3, help="white-noise std on every channel")
    option(wr, "--compression", choices=("none", "gzip", "lzf"), default="none",
           help="HDF5 compression filter")


def run(args: argparse.Namespace) -> int:
    from scidl.cli import UserError

    if not getattr(args, "action", None):
        raise UserError("name an action: scidl data inspect PATH | write-weather DIR (see --help)")
    if args.action == "inspect":
        from scidl.data.inspect import format_inspection, inspect_path

        if args.seconds < 0:
            raise UserError(f"--seconds must be >= 0 (got {args.seconds})")
        for line in format_inspection(inspect_path(args.path, args.seconds, args.reader)):
            print(line)
        return 0
    from scidl.workloads.weather_seg.files import write_weather_files

    for key in ("n_train", "n_val", "size", "samples_per_file"):
        if getattr(args, key) < 1:
            raise UserError(f"--{key.replace('_', '-')} must be >= 1 (got {getattr(args, key)})")
    meta = write_weather_files(args.dir, n_train=args.n_train, n_val=args.n_val, size=args.size,
                               seed=args.seed, noise=args.noise,
                               samples_per_file=args.samples_per_file, fmt=args.fmt,
                               compression=None if args.compression == "none" else args.compression)
    print(f"wrote {meta['n_train']} training and {meta['n_val']} validation samples "
          f"({len(meta['channels'])} channels, {args.size}x{args.size}) to {args.dir}/train "
          f"and {args.dir}/val; train with: scidl train weather_seg task.data_dir={args.dir}")
    return 0
