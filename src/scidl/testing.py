"""Helpers for tests that spawn gloo processes on CPU (importable by users' tests too).

``run_distributed(fn, world_size, *args)`` starts ``world_size`` processes, initialises a
gloo process group in each (``torch.set_num_threads(1)``), calls ``fn(rank, world_size,
*args)`` and returns the per-rank return values (which must be picklable). A process
that fails raises in the caller with its traceback; the whole call is bounded by
``timeout`` seconds, after which every child is killed. The launcher itself is product
code: :func:`scidl.runtime.launch.run_distributed`.
"""

from __future__ import annotations

from scidl.runtime.launch import run_distributed

__all__ = ["run_distributed"]
