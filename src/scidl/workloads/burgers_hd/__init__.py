"""PINN for a high-dimensional Burgers-type equation (E, Han & Jentzen 2017).

Docs: ``docs/workloads/burgers_hd.md``.
"""

from scidl.workloads.burgers_hd.workload import BurgersHD, BurgersHDConfig

__all__ = ["BurgersHD", "BurgersHDConfig"]
