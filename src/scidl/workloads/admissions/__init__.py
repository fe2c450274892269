"""``admissions``: MLP regression on a generated graduate-admissions-like table.

Docs: ``docs/workloads/admissions.md``.
"""

from scidl.workloads.admissions.workload import Admissions, AdmissionsConfig

__all__ = ["Admissions", "AdmissionsConfig"]
