"""Process-wide torch settings of a run (thread count, deterministic algorithms), undone after it.

A run started in the caller's interpreter (``scidl.run`` without ``--nproc``) must leave
the interpreter as it found it: a notebook that trains once keeps its own thread count
and its own determinism setting for what it does next.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def thread_count(threads_per_proc: int | None, local_procs: int, cores: int | None) -> int | None:
    """Torch threads for one process: the configured count, or the cores shared among the
    processes on this machine; None (keep torch's default) for a lone process."""
    if threads_per_proc:
        return threads_per_proc
    if local_procs > 1:  # several processes on one machine: share the cores, don't oversubscribe
        return max(1, (cores or 1) // local_procs)
    return None


@contextmanager
def torch_settings(threads: int | None, deterministic: bool) -> Iterator[None]:
    """Set the thread count (None: unchanged) and, if asked, deterministic algorithms for
    the body; restore the caller's settings afterwards, also when the body raises."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if threads:
            torch.set_num_threads(threads)
        if deterministic:
            torch.use_deterministic_algorithms(True)
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn_only)
