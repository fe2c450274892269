"""SciDL: scalable deep learning for science on ``torch.distributed``.

Public API::

    import scidl
    cfg = scidl.load_config("digits", overrides=["train.epochs=5"], extra={"dist": {"nproc": 2}})
    result = scidl.run(cfg)            # RunResult(run_dir, summary)

Importing ``scidl`` has no side effects: nothing reads the environment or starts a
process group until :func:`run` is called.
"""

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
]
__version__ = "0.1.0"
