"""Per-label GANs vs one conditional GAN on scikit-learn digits (8 × 8 images).

Docs: ``docs/workloads/cgan_per_label.md``.
"""

from scidl.workloads.cgan_per_label.workload import CGANConfig, CGANPerLabel

__all__ = ["CGANPerLabel", "CGANConfig"]
