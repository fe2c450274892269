"""Data for distributed training: a resumable sharded sampler, data filtering for large batches."""

from scidl.data.filtering import FilterResult, filter_by_scores, filter_dataset, warmup_scores
from scidl.data.sampler import ResumableDistributedSampler

__all__ = [
    "FilterResult",
    "ResumableDistributedSampler",
    "filter_by_scores",
    "filter_dataset",
    "warmup_scores",
]
