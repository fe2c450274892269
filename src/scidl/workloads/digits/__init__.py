"""``digits``: scikit-learn's 8×8 handwritten digits (1,797 images, shipped in the package).

Docs: ``docs/workloads/digits.md``.
"""

from scidl.workloads.digits.workload import Digits, DigitsConfig

__all__ = ["Digits", "DigitsConfig"]
