"""Science workloads, each registered by name (see :mod:`scidl.workloads.registry`)."""

from scidl.workloads.base import BuildContext, Task, Workload, WorkloadConfig
from scidl.workloads.registry import (
    describe_workloads,
    get_workload,
    register_workload,
    workload_class,
    workload_label,
    workload_names,
)

__all__ = [
    "BuildContext",
    "Task",
    "Workload",
    "WorkloadConfig",
    "describe_workloads",
    "get_workload",
    "register_workload",
    "workload_class",
    "workload_label",
    "workload_names",
]
