"""Distributed samplers that can resume in the middle of an epoch (by index or by file)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from scidl.config import ConfigError


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` whose iteration can start after ``start_index`` samples.

    Data order depends only on (seed, epoch, rank), so a resumed run sees exactly the
    samples the uninterrupted run would have seen.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int,
        rank: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
            drop_last=drop_last,
        )
        self.start_index = 0

    def set_start(self, index: int) -> None:
        """Skip the first ``index`` samples of this rank's order (for the current epoch)."""
        self.start_index = index

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self.start_index = self.start_index, 0  # only the resumed epoch is shortened
        return iter(indices[start:])

    def __len__(self) -> int:
        return self.num_samples - self.start_index


def deal_files(n_files: int, num_replicas: int, seed: int, shuffle: bool) -> list[list[int]]:
    """The file numbers of each rank: a seeded shuffle of the files (none without
    ``shuffle``), then dealt round robin; each rank's list sorted. Fixed for the run, so
    a rank's files can be staged on node-local storage."""
    order = np.random.default_rng(seed).permutation(n_files) if shuffle else np.arange(n_files)
    return [sorted(order[r::num_replicas].tolist()) for r in range(num_replicas)]


class ResumableFileSampler(Sampler[int]):
    """Shards by file, as the DeepCAM loader does: each rank reads only its own files.

    The files are dealt to the ranks once (a seeded shuffle, then round robin), so a
    rank's files never change and can be staged on node-local storage. Each epoch the
    rank's samples are shuffled (seed, epoch, rank). Every rank yields the same number of
    samples per epoch (the smallest share; the rest of a larger share is skipped that
    epoch), so the ranks stay in step. ``set_start`` resumes mid-epoch like
    :class:`ResumableDistributedSampler`.

    Args:
        file_sizes: samples in each file, in the dataset's order (``FileDataset.sizes``).
    """

    def __init__(self, file_sizes: Sequence[int], num_replicas: int, rank: int,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        if len(file_sizes) < num_replicas:
            raise ConfigError(f"data.shard_by=file: {len(file_sizes)} files for "
                              f"{num_replicas} data-parallel ranks; every rank needs a file "
                              "(use data.shard_by=index or more files)")
        self.num_replicas, self.rank, self.shuffle, self.seed = num_replicas, rank, shuffle, seed
        self.drop_last = drop_last
        self.epoch = 0
        self.start_index = 0
        offsets = np.concatenate([[0], np.cumsum(file_sizes)]).astype(int)
        shares = deal_files(len(file_sizes), num_replicas, seed, shuffle)
        self.files = shares[rank]  # file numbers this rank reads
        self._indices = [i for f in self.files for i in range(offsets[f], offsets[f + 1])]
        self.num_samples = min(sum(int(file_sizes[f]) for f in s) for s in shares)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, index: int) -> None:
        """Skip the first ``index`` samples of this rank's order (for the current epoch)."""
        self.start_index = index

    def __iter__(self) -> Iterator[int]:
        idx = self._indices
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch + self.rank)
            idx = [idx[i] for i in torch.randperm(len(idx), generator=g).tolist()]
        idx = idx[: self.num_samples]
        start, self.start_index = self.start_index, 0
        return iter(idx[start:])

    def __len__(self) -> int:
        return self.num_samples - self.start_index


def build_sampler(dataset: Dataset, num_replicas: int, rank: int, shuffle: bool, seed: int,
                  drop_last: bool, shard_by: str = "index") -> ResumableDistributedSampler | ResumableFileSampler:
    """The trainer's sampler: by index (every rank may read every file) or by file
    (``shard_by="file"``: needs a dataset with per-file sizes, such as ``FileDataset``)."""
    if shard_by == "index":
        return ResumableDistributedSampler(dataset, num_replicas, rank, shuffle=shuffle,
                                           seed=seed, drop_last=drop_last)
    sizes = getattr(dataset, "sizes", None)
    if sizes is None:
        raise ConfigError("data.shard_by=file needs training data read from files "
                          "(scidl.data.FileDataset); this workload's data is in memory")
    return ResumableFileSampler(sizes, num_replicas, rank, shuffle=shuffle, seed=seed,
                                drop_last=drop_last)
