"""``inverse``: learned post-processing of a Tikhonov deblurring (FBPConvNet-style).

Docs: ``docs/workloads/inverse.md``.
"""

from scidl.workloads.inverse.workload import Inverse, InverseConfig

__all__ = ["Inverse", "InverseConfig"]
