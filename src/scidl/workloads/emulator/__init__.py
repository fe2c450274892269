"""``emulator``: a neural emulator of (synthetic) gas optics, after Veerman et al. (2021).

Docs: ``docs/workloads/emulator.md``.
"""

from scidl.workloads.emulator.workload import Emulator, EmulatorConfig

__all__ = ["Emulator", "EmulatorConfig"]
