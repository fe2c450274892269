"""Data for distributed training: datasets over HDF5 / netCDF / Zarr / NumPy files read
lazily per process, resumable sharded samplers (by index or by file), a resumable
stream of batches sharded by rank and worker, reading in a background thread, staging to
node-local storage, data filtering for large batches."""

from scidl.data.files import FileDataset, find_files, stage_files
from scidl.data.filtering import FilterResult, filter_by_scores, filter_dataset, warmup_scores
from scidl.data.formats import DataError, DirectReader, VarInfo, detect_format, open_source
from scidl.data.loading import ThreadPrefetcher
from scidl.data.sampler import ResumableDistributedSampler, ResumableFileSampler, build_sampler
from scidl.data.stream import FileStream, StreamLoader

__all__ = [
    "DataError",
    "DirectReader",
    "FileDataset",
    "FileStream",
    "FilterResult",
    "ResumableDistributedSampler",
    "ResumableFileSampler",
    "StreamLoader",
    "ThreadPrefetcher",
    "VarInfo",
    "build_sampler",
    "detect_format",
    "filter_by_scores",
    "filter_dataset",
    "find_files",
    "open_source",
    "stage_files",
    "warmup_scores",
]
