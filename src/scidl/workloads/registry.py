"""Workload registry: names map to ``module:Class`` paths, imported only when asked for."""

from __future__ import annotations

from scidl.registry import Registry, RegistryError
from scidl.workloads.base import Workload
from scidl.workloads.factory import is_reference, load_factory

# One line per workload. Modules are imported lazily (no import-time side effects).
_BUILTIN: dict[str, str] = {
    "admissions": "scidl.workloads.admissions:Admissions",
    "digits": "scidl.workloads.digits:Digits",
    "burgers": "scidl.workloads.burgers:Burgers",
    "burgers_hd": "scidl.workloads.burgers_hd:BurgersHD",
    "nbody": "scidl.workloads.nbody:NBody",
    "ising_vae": "scidl.workloads.ising_vae:IsingVAEWorkload",
    "alloy_epi": "scidl.workloads.alloy_epi:AlloyEPI",
    "geneexpr_ans": "scidl.workloads.geneexpr_ans:GeneExprANS",
    "emulator": "scidl.workloads.emulator:Emulator",
    "inverse": "scidl.workloads.inverse:Inverse",
    "weather_seg": "scidl.workloads.weather_seg:WeatherSeg",
    "noisy_labels": "scidl.workloads.noisy_labels:NoisyLabels",
    "cgan_per_label": "scidl.workloads.cgan_per_label:CGANPerLabel",
}

WORKLOADS: Registry[type[Workload]] = Registry("workload", _BUILTIN, group="scidl.workloads")

# Kept for callers that catch the old name: the registry's one lookup error.
UnknownWorkloadError = RegistryError


def register_workload(cls: type[Workload]) -> type[Workload]:
    """Register a user-defined workload class under ``cls.name`` (usable as a decorator).

    Installed packages can instead declare an entry point in the group
    ``scidl.workloads`` (``name = "package.module:Class"``).
    """
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a non-empty `name`")
    return WORKLOADS.register(cls.name, cls)


def workload_class(name: str) -> type[Workload]:
    """The Workload class ``name`` selects: a registered name, or a user's task factory
    as ``module:attr`` (see :mod:`scidl.workloads.factory`). The one place a workload
    name is resolved."""
    if is_reference(name):
        return load_factory(name)
    return WORKLOADS.get(name)


def workload_label(name: str) -> str:
    """The name a run of workload ``name`` is filed under (run folder, summary, output):
    ``name`` itself, or a task factory's own name for a ``module:attr`` reference."""
    return load_factory(name).name if is_reference(name) else name


def workload_names() -> list[str]:
    """All registered workload names, sorted."""
    return WORKLOADS.names()


def get_workload(name: str) -> Workload:
    """Return a fresh instance of the workload called ``name`` (or ``module:attr``)."""
    return workload_class(name)()


def describe_workloads() -> list[tuple[str, str]]:
    """(name, one-line description) for every workload."""
    return [(n, get_workload(n).description) for n in workload_names()]
