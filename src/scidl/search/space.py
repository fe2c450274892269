"""Search spaces: named parameters, their ranges, and where each lands in a run config.

A space is plain data (a YAML file or a dict)::

    params:                       # sampled in this order (put depth before width)
      depth: {type: int, low: 1, high: 4, role: depth, target: task.depth}
      width: {type: int, low: 8, high: 256, log: true, role: width, target: task.width}
      activation: {type: categorical, choices: [relu, tanh], target: task.activation}
      lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true, target: optim.lr}
    layers:                       # optional: compose a list from depth and width
      task.hidden: {depth: depth, width: width}      # -> task.hidden = [width] * depth
      # {depth: d, width: w, growth: 2} -> [w, 2w, 4w, ...]
    fixed:                        # applied to every trial
      train.epochs: 20

``target`` is a dotted run-config key (``task.*``, ``train.*``, ``optim.*``...); a trial's
overrides are ``fixed``, then the user's own overrides (``scidl search W key=value``), then
the sampled values, applied last in :func:`scidl.config.load_config`. ``role`` tells the greedy strategy which parameter is the
depth and which the width. A user file given with ``--space`` is merged over the
workload's default space parameter by parameter (``name: null`` removes a parameter).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ParamSpec(BaseModel):
    """One searched parameter."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["int", "float", "categorical"] = Field(description="distribution kind")
    low: float | None = Field(None, description="lower bound (int/float)")
    high: float | None = Field(None, description="upper bound, inclusive (int/float)")
    log: bool = Field(False, description="sample uniformly in log space")
    choices: list[Any] | None = Field(None, description="values of a categorical parameter")
    target: str | None = Field(None, description="dotted run-config key the value sets")
    role: Literal["depth", "width"] | None = Field(None, description="meaning for greedy search")

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError("an int/float parameter needs 'low' <= 'high'")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scaled parameter needs 'low' > 0")
        return self

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution of this parameter."""
        if self.type == "categorical":
            return optuna.distributions.CategoricalDistribution(self.choices or [])
        if self.type == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)  # type: ignore[arg-type]
        return optuna.distributions.FloatDistribution(float(self.low), float(self.high), log=self.log)  # type: ignore[arg-type]


class LayersSpec(BaseModel):
    """A list-valued config key: ``[round(width * growth**i) for i in range(depth)]``."""

    model_config = ConfigDict(extra="forbid")

    depth: str = Field(description="name of the depth parameter")
    width: str = Field(description="name of the width parameter")
    growth: float = Field(1.0, gt=0, description="width factor from one layer to the next")

    def widths(self, depth: int, width: int) -> list[int]:
        return [max(1, round(width * self.growth**i)) for i in range(depth)]


class SearchSpace(BaseModel):
    """Parameters, their run-config targets, and fixed overrides for every trial."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, ParamSpec] = Field(default_factory=dict, description="searched parameters")
    layers: dict[str, LayersSpec] = Field(default_factory=dict, description="composed lists")
    fixed: dict[str, Any] = Field(default_factory=dict, description="overrides for every trial")

    @model_validator(mode="after")
    def _check_layers(self) -> SearchSpace:
        for key, spec in self.layers.items():
            for name in (spec.depth, spec.width):
                if name not in self.params:
                    raise ValueError(f"layers.{key} refers to unknown parameter {name!r}")
        return self

    def param_with_role(self, role: str) -> str | None:
        """Name of the parameter with ``role`` (``depth``/``width``), or None."""
        return next((n for n, p in self.params.items() if p.role == role), None)

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        return {name: p.distribution() for name, p in self.params.items()}

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample every parameter through ``trial`` (in declaration order)."""
        out: dict[str, Any] = {}
        for name, p in self.params.items():
            if p.type == "categorical":
                out[name] = trial.suggest_categorical(name, p.choices or [])
            elif p.type == "int":
                out[name] = trial.suggest_int(name, int(p.low), int(p.high), log=p.log)  # type: ignore[arg-type]
            else:
                out[name] = trial.suggest_float(name, float(p.low), float(p.high), log=p.log)  # type: ignore[arg-type]
        return out

    def overrides(self, params: dict[str, Any], fixed: bool = True) -> dict[str, Any]:
        """Nested run-config overrides for sampled ``params`` (after ``fixed`` if asked)."""
        flat: dict[str, Any] = dict(self.fixed) if fixed else {}
        for name, spec in self.params.items():
            if spec.target and name in params:
                flat[spec.target] = params[name]
        for key, layers in self.layers.items():
            flat[key] = layers.widths(int(params[layers.depth]), int(params[layers.width]))
        return unflatten(flat)

    def fixed_overrides(self) -> dict[str, Any]:
        return unflatten(dict(self.fixed))


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "a.c": 2}`` -> ``{"a": {"b": 1, "c": 2}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = copy.deepcopy(value)
    return out


# Default spaces per workload (targets follow each workload's ``Config`` fields). A named
# variant "<workload>-<name>" is chosen with ``--space <name>``.
_ACT = {"type": "categorical", "choices": ["relu", "tanh", "gelu"], "target": "task.activation"}

DEFAULT_SPACES: dict[str, dict[str, Any]] = {
    "admissions": {
        "params": {
            "depth": {"type": "int", "low": 1, "high": 4, "role": "depth"},
            "width": {"type": "int", "low": 4, "high": 128, "log": True, "role": "width"},
            "activation": _ACT,
            "lr": {"type": "float", "low": 3e-4, "high": 3e-2, "log": True, "target": "optim.lr"},
            "batch_size": {"type": "categorical", "choices": [16, 32, 64], "target": "train.batch_size"},
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd"], "target": "optim.name"},
        },
        "layers": {"task.hidden": {"depth": "depth", "width": "width"}},
        "fixed": {"train.epochs": 40},
    },
    "digits": {  # MLP on the 8x8 images
        "params": {
            "depth": {"type": "int", "low": 1, "high": 3, "role": "depth"},
            "width": {"type": "int", "low": 8, "high": 256, "log": True, "role": "width"},
            "activation": _ACT,
            "lr": {"type": "float", "low": 3e-4, "high": 1e-2, "log": True, "target": "optim.lr"},
            "batch_size": {"type": "categorical", "choices": [32, 64, 128], "target": "train.batch_size"},
        },
        "layers": {"task.hidden": {"depth": "depth", "width": "width"}},
        "fixed": {"task.model": "mlp", "train.epochs": 10},
    },
    "digits-cnn": {  # `--space cnn`: 3x3 conv stacks (channels double per layer) + MLP head
        "params": {
            "n_conv": {"type": "int", "low": 1, "high": 3, "role": "depth"},
            "channels": {"type": "int", "low": 4, "high": 48, "log": True, "role": "width"},
            "head_layers": {"type": "int", "low": 0, "high": 1},
            "head_width": {"type": "int", "low": 16, "high": 128, "log": True},
            "activation": {"type": "categorical", "choices": ["relu", "gelu"], "target": "task.activation"},
            "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True, "target": "optim.lr"},
        },
        "layers": {
            "task.channels": {"depth": "n_conv", "width": "channels", "growth": 2.0},
            "task.hidden": {"depth": "head_layers", "width": "head_width"},
        },
        "fixed": {"task.model": "cnn", "train.epochs": 8},
    },
    "burgers": {
        "params": {
            "depth": {"type": "int", "low": 1, "high": 5, "role": "depth", "target": "task.depth"},
            "width": {"type": "int", "low": 8, "high": 64, "log": True, "role": "width",
                      "target": "task.hidden"},
            "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True, "target": "optim.lr"},
        },
    },
}


class SpaceError(ValueError):
    """A malformed search space (message names the offending entry)."""


def merge_space(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge ``update`` over ``base`` entry by entry; a ``None`` entry removes it."""
    out = copy.deepcopy(base)
    for section in ("params", "layers", "fixed"):
        merged = dict(out.get(section) or {})
        for key, value in (update.get(section) or {}).items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = copy.deepcopy(value)
        out[section] = merged
    unknown = set(update) - {"params", "layers", "fixed"}
    if unknown:
        raise SpaceError(f"unknown search-space section(s) {sorted(unknown)}; valid: params, layers, fixed")
    return out


def build_space(data: dict[str, Any]) -> SearchSpace:
    """Validate a space dict; errors name the offending entry."""
    try:
        return SearchSpace.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(p) for p in e["loc"])
        raise SpaceError(f"invalid search space entry '{loc}': {e['msg']}") from None


def load_space(workload: str, path: str | Path | None = None) -> dict[str, Any]:
    """The default space of ``workload`` merged with an optional YAML file (as a dict)."""
    base = copy.deepcopy(DEFAULT_SPACES.get(workload, {}))
    if path is not None and not Path(path).is_file() and f"{workload}-{path}" in DEFAULT_SPACES:
        base, path = copy.deepcopy(DEFAULT_SPACES[f"{workload}-{path}"]), None  # named variant
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise SpaceError(f"search space file not found: {p}")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise SpaceError(f"search space file {p} must hold a mapping")
        base = merge_space(base, data)
    if not base.get("params"):
        raise SpaceError(
            f"no default search space for workload {workload!r}; pass --space FILE.yaml "
            f"(workloads with defaults: {', '.join(sorted(k for k in DEFAULT_SPACES if '-' not in k))})"
        )
    build_space(base)  # validate now, report errors early
    return base
