"""Effective pair interactions of a multi-component bcc alloy (after Zhang et al. 2020).

Docs: ``docs/workloads/alloy_epi.md``.
"""

from scidl.workloads.alloy_epi.workload import AlloyEPI, AlloyEPIConfig

__all__ = ["AlloyEPI", "AlloyEPIConfig"]
