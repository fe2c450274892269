"""A distributed sampler that can resume in the middle of an epoch."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Dataset, DistributedSampler


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
