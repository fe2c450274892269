"""Where processes come from and what they share.

Public modules (imported on use, so ``import scidl.runtime`` starts nothing):

* :mod:`scidl.runtime.env` — launcher detection (single, torchrun, Slurm, MPI): rank,
  world size, rendezvous address.
* :mod:`scidl.runtime.dist` — process-group set-up and tear-down, ``unwrap_model``.
* :mod:`scidl.runtime.launch` — in-process multi-rank launch (elastic agent, tests, benchmarks).
* :mod:`scidl.runtime.seed` — seeding and RNG-state capture.
* :mod:`scidl.runtime.files` — atomic results files and figures.
* :mod:`scidl.runtime.plotting` — human units on plot axes, provenance captions.
"""

__all__ = ["dist", "env", "files", "launch", "plotting", "seed"]
