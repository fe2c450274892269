"""What is in a data file or folder, and how fast SciDL reads it (``scidl data inspect``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from scidl.data.files import FileDataset, find_files
from scidl.data.formats import VarInfo, detect_format, open_source


@dataclass
class Inspection:
    """A data path: its sources, the first one's variables, the measured read rate."""

    path: Path
    files: list[Path]
    formats: list[str]
    total_bytes: int
    variables: dict[str, VarInfo]
    sample_vars: list[str] = field(default_factory=list)
    samples: int = 0
    read_bytes: int = 0
    read_s: float = 0.0

    @property
    def mb_per_s(self) -> float:
        return self.read_bytes / self.read_s / 1e6 if self.read_s > 0 else float("nan")


def sample_variables(info: dict[str, VarInfo]) -> list[str]:
    """The variables that hold samples: at least 2-D and as long (first axis) as the
    largest one (coordinate variables such as ``lat`` drop out)."""
    arrays = {n: v for n, v in info.items() if len(v.shape) >= 2} or info
    if not arrays:
        return []
    n0 = max(arrays.values(), key=lambda v: v.nbytes).shape[0]
    return [n for n, v in arrays.items() if v.shape[0] == n0]


def _size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size


def read_rate(ds: FileDataset, max_s: float = 1.0, max_samples: int | None = None) -> tuple[int, int, float]:
    """(samples, bytes, seconds) reading ``ds`` one sample at a time, in order, for up to
    ``max_s`` seconds (at least one sample)."""
    n = len(ds) if max_samples is None else min(len(ds), max_samples)
    done = nbytes = 0
    t0 = time.perf_counter()
    while done < n:
        nbytes += sum(t.numel() * t.element_size() for t in ds[done])
        done += 1
        if time.perf_counter() - t0 > max_s:
            break
    return done, nbytes, time.perf_counter() - t0


def inspect_path(path: str | Path, measure_s: float = 1.0, reader: str = "auto") -> Inspection:
    """Describe ``path`` (a file, a store, or a folder of files) and time a read of it
    (``reader``: as for :func:`scidl.data.formats.open_source`)."""
    files = find_files(path)
    src = open_source(files[0], reader)
    try:
        info = src.variables()
    finally:
        src.close()
    formats = sorted({detect_format(f) for f in files}) if reader == "auto" else [reader]
    out = Inspection(Path(path), files, formats,
                     sum(_size(f) for f in files), info, sample_variables(info))
    if out.sample_vars and measure_s > 0:
        ds = FileDataset(files, out.sample_vars, reader=reader)
        try:
            out.samples, out.read_bytes, out.read_s = read_rate(ds, measure_s)
        finally:
            ds.close()
    return out


def format_inspection(r: Inspection) -> list[str]:
    """The lines ``scidl data inspect`` prints."""
    lines = [f"{r.path}: {len(r.files)} source(s), {', '.join(r.formats)}, "
             f"{r.total_bytes / 1e6:.1f} MB on disk"]
    if len(r.files) > 1:
        lines.append(f"variables of {r.files[0].name} (every source must hold the same names):")
    width = max((len(n) for n in r.variables), default=4)
    for name, v in r.variables.items():
        chunks = "contiguous" if v.chunks is None else "chunks " + "x".join(map(str, v.chunks))
        lines.append(f"  {name:<{width}}  {v.dtype:<8} {'x'.join(map(str, v.shape)):<18} "
                     f"{chunks}, {v.compression or 'uncompressed'}")
    if r.samples:
        lines.append(f"read ({', '.join(r.sample_vars)}; one sample at a time through "
                     f"scidl.data.FileDataset): {r.samples} samples, {r.read_bytes / 1e6:.1f} MB "
                     f"in {r.read_s:.3f} s = {r.mb_per_s:.0f} MB/s (page cache as found, "
                     "not dropped)")
    return lines
