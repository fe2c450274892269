"""Neural symplectic N-body integrator (Cai, Portegies Zwart & Podareanu 2021).

Docs: ``docs/workloads/nbody.md``.
"""

from scidl.workloads.nbody.workload import NBody, NBodyConfig

__all__ = ["NBody", "NBodyConfig"]
