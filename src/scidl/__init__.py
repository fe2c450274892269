"""SciDL: scalable deep learning for science on ``torch.distributed``.

Public API::

    import scidl
    cfg = scidl.load_config("digits", overrides=["train.epochs=5"], extra={"dist": {"nproc": 2}})
    result = scidl.run(cfg)            # RunResult(run_dir, summary)

    # or keep your own training loop (torchrun / srun / mpirun / python):
    model, optimizer, loader = scidl.setup(model, optimizer, loader, comm="powersgd")

Importing ``scidl`` has no side effects: nothing reads the environment or starts a
process group until :func:`run` is called. ``scidl.__version__`` is the installed
distribution's version (package metadata), or ``"0+unknown"`` when SciDL runs from a
source tree that was never installed; it is looked up on first access.
"""

from __future__ import annotations

from typing import Any

from scidl.config import ConfigError, RunConfig, load_config
from scidl.train.api import RunResult, run
from scidl.workloads import BuildContext, Task, Workload, WorkloadConfig, register_workload

__all__ = [
    "BuildContext",
    "ConfigError",
    "RunConfig",
    "RunResult",
    "Task",
    "Workload",
    "WorkloadConfig",
    "load_config",
    "register_workload",
    "run",
    "setup",
]


def _package_version(distribution: str = "scidl") -> str:
    """The installed version of ``distribution`` from its metadata, or ``"0+unknown"``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "0+unknown"


def __getattr__(name: str) -> Any:
    """``__version__`` and ``setup`` on demand (nothing read or imported at import time)."""
    if name == "__version__":
        return _package_version()
    if name == "setup":
        from scidl.own_loop import setup

        return setup
    raise AttributeError(f"module 'scidl' has no attribute {name!r}")
