"""Reading batches in a background thread of the training process.

DataLoader worker *processes* cost a core each, a copy of every batch through shared
memory and a fork of the training process; on a machine whose cores the training
already uses they take time from it. :class:`ThreadPrefetcher` reads instead in one
thread of the training process, ``depth`` batches ahead. It pays where reading mostly
waits or copies with the GIL released: the direct reads of
:class:`scidl.data.formats.DirectReader` (``os.preadv``), ``torch.stack`` in the
collate, compressed chunks decoded by numcodecs; h5py holds the GIL while it reads, so
a thread helps less with compressed HDF5.

The order of the batches is the wrapped loader's; only the time at which they are read
changes, so a resumed run that skips the consumed batches reads the same ones (the
position is counted by the consumer, not the thread). A ``transform`` that draws from
torch's global random generator would race with the training thread's draws: draw from
a generator seeded by the sample index instead.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

_END, _ITEM, _ERROR = 0, 1, 2


class ThreadPrefetcher:
    """Iterate ``iterable`` in a daemon thread, at most ``depth`` items ahead.

    Each ``iter()`` starts a thread that iterates ``iter(iterable)`` (for a DataLoader:
    a fresh epoch iterator) and hands the items over in order; an exception in the
    thread is raised in the consumer; leaving the loop early stops the thread.
    """

    def __init__(self, iterable: Iterable[Any], depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1 (got {depth})")
        self.iterable, self.depth = iterable, depth

    def __len__(self) -> int:
        return len(self.iterable)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        q: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=self.depth)
        stop = threading.Event()

        def put(item: tuple[int, Any]) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def run() -> None:
            try:
                for item in self.iterable:
                    if not put((_ITEM, item)):
                        return
                put((_END, None))
            except BaseException as e:  # noqa: BLE001 (handed to the consumer)
                put((_ERROR, e))

        thread = threading.Thread(target=run, name="scidl-read-ahead", daemon=True)
        thread.start()
        try:
            while True:
                kind, item = q.get()
                if kind == _END:
                    return
                if kind == _ERROR:
                    raise item
                yield item
        finally:
            stop.set()
            thread.join(timeout=10)
