"""An iterable dataset streaming batches from files, sharded by rank and by worker,
resumable mid-epoch, bit-exact with any number of DataLoader workers.

:class:`FileStream` turns a :class:`~scidl.data.files.FileDataset` into a stream of
batches. Each data-parallel rank reads only its own files (dealt once, as the DeepCAM
loader deals them, so they can be staged); each epoch the rank's files are shuffled and
its samples mixed within windows of ``window`` samples, and the result is cut into
batches. The stream is a pure function of (seed, epoch, rank): batch ``j`` of an epoch
is read by DataLoader worker ``j mod num_workers``, and the DataLoader hands the
workers' batches out round robin, so the sequence is the same with 0, 1 or 8 workers.

:class:`StreamLoader` wraps the DataLoader and counts the batches it hands out, which
is the stream's position: ``state_dict()`` saves (epoch, batches consumed) and a stream
given that state by ``load_state_dict`` starts its workers after those batches, with
the workers' turns rotated so that the next batch is the one the uninterrupted run
would have read next::

    stream = FileStream(FileDataset(paths, ["fields", "labels"]), batch_size=16,
                        rank=rank, world_size=world)
    loader = StreamLoader(stream, num_workers=2)
    for epoch in range(epochs):
        for batch in loader:          # one epoch; the next iteration is the next epoch
            ...
            if want_checkpoint:
                save({"data": stream.state_dict(), ...})
    # resuming: stream.load_state_dict(saved["data"]) before iterating the loader
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torch.utils.data._utils.collate import default_collate

from scidl.data.files import FileDataset
from scidl.data.formats import DataError
from scidl.data.sampler import deal_files


class FileStream(IterableDataset):
    """Batches of ``data`` for one data-parallel rank, in a seeded, resumable order.

    Args:
        data: the files and variables to read (a ``FileDataset``).
        batch_size: samples per batch.
        rank, world_size: this rank among the data-parallel ranks; each reads its own
            files, at least one each.
        shuffle: shuffle the files dealt to ranks (once), the rank's files and the
            samples within windows (each epoch); False: files and samples in order.
        seed: the seed of every shuffle.
        window: samples mixed together (consecutive samples of the rank's shuffled
            files); larger mixes more files into a batch, smaller reads longer runs.
        drop_last: drop the last, incomplete batch of an epoch.
        collate_fn: turns the list of samples into a batch (default: torch's).

    Every rank yields the same number of batches per epoch (of the smallest share of
    samples; the rest of a larger share is left out that epoch, a different part each
    epoch), so the ranks stay in step.
    """

    def __init__(self, data: FileDataset, batch_size: int, *, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, seed: int = 0, window: int = 1024, drop_last: bool = True,
                 collate_fn: Callable[[list[Any]], Any] | None = None) -> None:
        if batch_size < 1 or window < 1:
            raise DataError(f"batch_size and window must be >= 1 (got {batch_size}, {window})")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not in 0..{world_size - 1}")
        if len(data.sizes) < world_size:
            raise DataError(f"{len(data.sizes)} files for {world_size} data-parallel ranks; "
                            "every rank streams its own files and needs at least one")
        self.data, self.batch_size, self.rank, self.world_size = data, batch_size, rank, world_size
        self.shuffle, self.seed, self.window, self.drop_last = shuffle, seed, window, drop_last
        self.collate_fn = collate_fn or default_collate
        shares = deal_files(len(data.sizes), world_size, seed, shuffle)
        self.files = shares[rank]
        self.num_samples = min(sum(data.sizes[f] for f in s) for s in shares)
        whole, rest = divmod(self.num_samples, batch_size)
        self.batches_per_epoch = whole + (1 if rest and not drop_last else 0)
        if self.batches_per_epoch == 0:
            raise DataError(f"a rank's share of {self.num_samples} samples holds no batch of "
                            f"{batch_size}")
        self.epoch = 0
        self.position = 0  # batches of this epoch handed out (StreamLoader counts them)

    # ------------------------------------------------------------------ order
    def order(self, epoch: int) -> np.ndarray:
        """This rank's global sample indices for ``epoch``, in stream order (the samples
        of ``batches_per_epoch`` batches)."""
        files = list(self.files)
        g = np.random.default_rng([self.seed, epoch, self.rank])
        if self.shuffle:
            files = [files[k] for k in g.permutation(len(files))]
        idx = np.concatenate([np.asarray(self.data.file_indices(f)) for f in files])
        if self.shuffle:
            for s in range(0, len(idx), self.window):
                idx[s:s + self.window] = idx[s:s + self.window][g.permutation(len(idx[s:s + self.window]))]
        return idx[: min(self.num_samples, self.batches_per_epoch * self.batch_size)]

    def batch_indices(self, epoch: int, j: int) -> list[int]:
        """Global sample indices of batch ``j`` of ``epoch``."""
        return self.order(epoch)[j * self.batch_size:(j + 1) * self.batch_size].tolist()

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        workers, me = (info.num_workers, info.id) if info is not None else (1, 0)
        order = self.order(self.epoch)
        b = self.batch_size
        for j in range(self.position + me, self.batches_per_epoch, workers):
            yield self.collate_fn(self.data.__getitems__(order[j * b:(j + 1) * b].tolist()))

    def __len__(self) -> int:
        return self.batches_per_epoch - self.position

    def set_epoch(self, epoch: int) -> None:
        """Go to the start of ``epoch`` (nothing changes if it is the current epoch)."""
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The position (epoch, batches consumed) and what the order depends on."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "batch_size": self.batch_size, "rank": self.rank, "world_size": self.world_size,
                "window": self.window, "shuffle": self.shuffle, "files": len(self.data.sizes),
                "samples": len(self.data)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` was saved; the stream's settings must be the ones it
        was saved with (a different order would not continue that run)."""
        mine = self.state_dict()
        differ = [k for k in mine if k not in ("epoch", "position") and state.get(k) != mine[k]]
        if differ:
            raise DataError("cannot resume this stream from a state saved with other settings: "
                            + ", ".join(f"{k} {state.get(k)} (now {mine[k]})" for k in differ))
        if not 0 <= int(state["position"]) <= self.batches_per_epoch:
            raise DataError(f"stream position {state['position']} is outside the epoch's "
                            f"{self.batches_per_epoch} batches")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


class StreamLoader:
    """A ``DataLoader`` over a :class:`FileStream` that counts the batches it hands out.

    Each ``iter()`` runs the rest of the stream's current epoch (a fresh DataLoader, so
    its workers start from the stream's position), then moves the stream to the next
    epoch. Keyword arguments go to ``DataLoader`` (``num_workers``, ``pin_memory``,
    ``prefetch_factor``, ``multiprocessing_context``, ...); ``persistent_workers`` is
    refused: a kept worker would not see the position of a resumed stream.
    """

    def __init__(self, stream: FileStream, **loader_kwargs: Any) -> None:
        for key in ("batch_size", "sampler", "batch_sampler", "shuffle", "collate_fn"):
            if key in loader_kwargs:
                raise DataError(f"StreamLoader: {key} is the stream's to decide, not the loader's")
        if loader_kwargs.get("persistent_workers"):
            raise DataError("StreamLoader: persistent_workers would keep workers that start "
                            "from an old position; each epoch starts its workers afresh")
        self.stream, self.loader_kwargs = stream, loader_kwargs

    def __len__(self) -> int:
        return len(self.stream)

    def __iter__(self) -> Iterator[Any]:
        stream = self.stream
        if stream.position < stream.batches_per_epoch:
            loader = DataLoader(stream, batch_size=None, **self.loader_kwargs)
            for batch in loader:
                stream.position += 1
                yield batch
        stream.epoch, stream.position = stream.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)
