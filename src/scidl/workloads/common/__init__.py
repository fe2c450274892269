"""Network building blocks shared by several workloads (MLPs, a small U-net).

They live here, next to the workloads that use them, rather than in a top-level package:
they are the workloads' own layers, not a model zoo. Import the modules directly
(``scidl.workloads.common.nets``, ``scidl.workloads.common.unet``).
"""

__all__: list[str] = []
