"""Physics-informed neural network (PINN) for the viscous Burgers equation.

Docs: ``docs/workloads/burgers.md``.
"""

from scidl.workloads.burgers.workload import Burgers, BurgersConfig

__all__ = ["Burgers", "BurgersConfig"]
