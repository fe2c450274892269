"""Scaling lab: weak/strong scaling runs, collective benchmarks, α-β-γ cost model.

* :mod:`scidl.scaling.costmodel` — Thakur–Rabenseifner–Gropp collective costs, two-level
  placement, compression.
* :mod:`scidl.scaling.predict` — step time and efficiency from a step profile and a
  hardware profile (bucketed overlap model).
* :mod:`scidl.scaling.hardware` — hardware profiles and presets (``scidl/hardware/*.yaml``).
* :mod:`scidl.scaling.collectives` — collective benchmark and least-squares calibration.
* :mod:`scidl.scaling.measure` — ``scidl scale`` runs; :mod:`scidl.scaling.report` — plots
  and HTML; :mod:`scidl.scaling.published` — the published-results validation.
"""

from scidl.scaling.costmodel import Compression, LinkCost, Topology, allreduce_cost
from scidl.scaling.hardware import Hardware, Level, load_hardware, preset_names
from scidl.scaling.predict import StepProfile, predict_curve, predict_point

__all__ = [
    "Compression",
    "Hardware",
    "Level",
    "LinkCost",
    "StepProfile",
    "Topology",
    "allreduce_cost",
    "load_hardware",
    "predict_curve",
    "predict_point",
    "preset_names",
]
