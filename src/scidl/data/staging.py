"""The trainer's side of file data: staging a rank's files, DataLoader options."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from scidl.config import ConfigError


def stage_for_rank(dataset: Dataset, sampler: Any, stage_dir: str | None) -> Dataset:
    """``dataset`` reading from copies in ``stage_dir`` of the files this rank reads: its
    own files with a by-file sampler (``sampler.files``), every file otherwise. Without
    ``stage_dir`` the dataset itself."""
    if stage_dir is None:
        return dataset
    staged = getattr(dataset, "staged", None)
    if staged is None:
        raise ConfigError("data.stage_dir needs training data read from files "
                          "(scidl.data.FileDataset); this workload's data is in memory")
    return staged(stage_dir, getattr(sampler, "files", None))


def loader_options(train: Any, device: torch.device) -> dict[str, Any]:
    """``DataLoader`` keyword arguments from ``train.num_workers``, ``pin_memory``,
    ``persistent_workers`` and ``prefetch_factor`` (pinning only where a GPU receives the
    batches)."""
    out: dict[str, Any] = {"num_workers": train.num_workers,
                           "pin_memory": bool(train.pin_memory and device.type == "cuda")}
    if train.num_workers > 0:
        out["persistent_workers"] = train.persistent_workers
        if train.prefetch_factor is not None:
            out["prefetch_factor"] = train.prefetch_factor
    return out
