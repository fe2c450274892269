"""Helpers for tests that spawn gloo processes on CPU (importable by users' tests too).

``run_distributed(fn, world_size, *args)`` starts ``world_size`` processes, initialises a
gloo process group in each (``torch.set_num_threads(1)``), calls ``fn(rank, world_size,
*args)`` and returns the per-rank return values (which must be picklable). A process
that fails raises in the caller with its traceback; the whole call is bounded by
``timeout`` seconds, after which every child is killed. The launcher itself is product
code: :func:`scidl.runtime.launch.run_distributed`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from scidl.runtime.launch import run_distributed

__all__ = ["load_repo_script", "run_distributed"]


def load_repo_script(relpath: str) -> ModuleType:
    """A script of the source checkout (``benchmarks/x.py``, ``scripts/y.py``) loaded as a
    module, for tests of its pure parts (needs the editable install of a checkout)."""
    path = Path(__file__).resolve().parents[2] / relpath
    spec = importlib.util.spec_from_file_location(f"_repo_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
