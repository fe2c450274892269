"""Workload registry: names map to ``module:Class`` paths, imported only when asked for."""

from __future__ import annotations

import difflib
import importlib

from scidl.workloads.base import Workload

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

_EXTRA: dict[str, type[Workload]] = {}


class UnknownWorkloadError(KeyError):
    """Raised for a workload name that is not registered; the message lists the choices."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def register_workload(cls: type[Workload]) -> type[Workload]:
    """Register a user-defined workload class (usable as a decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a non-empty `name`")
    _EXTRA[cls.name] = cls
    return cls


def workload_names() -> list[str]:
    """All registered workload names, sorted."""
    return sorted({*_BUILTIN, *_EXTRA})


def get_workload(name: str) -> Workload:
    """Return a fresh instance of the workload called ``name``."""
    if name in _EXTRA:
        return _EXTRA[name]()
    if name not in _BUILTIN:
        close = difflib.get_close_matches(name, workload_names(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownWorkloadError(
            f"unknown workload {name!r}{hint}; choices: {', '.join(workload_names())}"
        )
    module, _, attr = _BUILTIN[name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    return cls()


def describe_workloads() -> list[tuple[str, str]]:
    """(name, one-line description) for every workload."""
    return [(n, get_workload(n).description) for n in workload_names()]
