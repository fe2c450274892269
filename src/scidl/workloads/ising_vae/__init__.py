"""VAE order parameter for the 2-D Ising order–disorder transition (Yin, Pei, Gao 2021).

Docs: ``docs/workloads/ising_vae.md``.
"""

from scidl.workloads.ising_vae.workload import IsingVAEConfig, IsingVAEWorkload

__all__ = ["IsingVAEWorkload", "IsingVAEConfig"]
