"""The workload contract: a science problem as model + data + loss + evaluation.

A workload knows nothing about parallelism: it builds a :class:`Task` from its own
pydantic config and a :class:`BuildContext`; the trainer shards the datasets, wraps
the model and reduces gradients.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import Dataset

Width = Annotated[int, Field(ge=1)]
"""A layer width or channel count in a workload config (``task.hidden=[0]`` is an error)."""

LossFn = Callable[[nn.Module, Any], torch.Tensor]
EvalFn = Callable[[nn.Module, Any], Mapping[str, float]]


class WorkloadConfig(BaseModel):
    """Base class for a workload's own settings (the ``task`` section of a run config)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass(frozen=True)
class BuildContext:
    """What a workload may know about the run it is built for.

    Attributes:
        seed: the run's seed; generated data must depend only on it (every rank builds
            the same dataset and the same initial model).
        device: where the model will live (the trainer moves it; data builders may use it).
        run_dir: the run folder, for workloads that write extra artefacts (plots).
        data_dir: a cache folder for generated datasets.
    """

    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    run_dir: Path | None = None
    data_dir: Path | None = None


@dataclass
class Task:
    """Everything the trainer needs to train and evaluate one model.

    Attributes:
        model: the network (initialised identically on every rank: build it after seeding).
        train_data: map-style dataset; a ``DistributedSampler`` shards it across ranks.
        loss: ``loss(model, batch) -> scalar tensor``; batch is what the DataLoader yields.
        evaluate: ``evaluate(model, val_data) -> {metric: value}``; called on rank 0 with the
            unwrapped model in eval mode under ``torch.no_grad`` unless ``eval_needs_grad``.
        val_data: held-out data passed to ``evaluate`` (may be None).
        headline: the metric name the run reports as its result (a key of ``evaluate``).
        higher_is_better: direction of ``headline`` (accuracy: True; error: False).
        collate_fn: optional DataLoader collate function.
        full_batch: if True the whole shard is one batch (PINN collocation sets).
        eval_needs_grad: evaluate with autograd enabled (PINN residuals).
        loss_needs_grad: ``loss`` differentiates through its inputs (PINN residuals by
            autograd), so a forward-only loss evaluation (the Anderson safeguard) keeps
            autograd on; it still runs no backward of the parameters.
        extras: anything workload-specific a caller may want (e.g. reference solutions).
        criterion: ``criterion(output, target)`` for batches ``(x, y)`` whose loss is
            ``criterion(model(x), y)``; pipeline parallelism needs it (the loss is computed
            on the last stage), everything else uses ``loss(model, batch)``.
    """

    model: nn.Module
    train_data: Dataset
    loss: LossFn
    evaluate: EvalFn
    val_data: Any = None
    headline: str = "loss"
    higher_is_better: bool = False
    collate_fn: Callable[..., Any] | None = None
    full_batch: bool = False
    eval_needs_grad: bool = False
    loss_needs_grad: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    criterion: Callable[[Any, Any], torch.Tensor] | None = None


class Workload(abc.ABC):
    """Base class of registered workloads.

    Subclasses set ``name``, ``description``, ``Config`` (a :class:`WorkloadConfig`) and
    implement :meth:`build`. ``defaults`` may hold overrides of the run config that suit the
    workload (e.g. ``{"optim": {"lr": 1e-3}, "train": {"epochs": 50}}``), applied before the
    user's YAML and command-line overrides. ``smoke`` holds overrides for a seconds-long
    configuration that the shared workload test suite trains.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type[WorkloadConfig]] = WorkloadConfig
    defaults: ClassVar[dict[str, Any]] = {}
    #: ``key=value`` overrides giving a tiny but real configuration, used by the shared
    #: test suite (every workload builds and trains two steps on 2 gloo processes).
    smoke: ClassVar[list[str]] = []

    @abc.abstractmethod
    def build(self, cfg: WorkloadConfig, ctx: BuildContext) -> Task:
        """Build the task (model, data, loss, evaluation) for ``cfg``."""

    def pictures(self, cfg: WorkloadConfig, model: nn.Module, task: Task,
                 out_dir: Path) -> list[Path]:
        """Optional: draw the trained model's results as PNG files in ``out_dir``.

        Called once after training, on rank 0, unless ``log.pictures=false``: ``model`` is
        a copy of the whole model (the best checkpoint's weights when the run kept one,
        else the final ones) in eval mode on the training device, yours to change (move,
        cast); autograd is enabled. ``task`` is the task :meth:`build` returned (reuse its
        reference data and evaluation). Keep it to seconds. An exception does not fail
        the run: it is reported as one warning line. Returns the files written (default:
        none).
        """
        return []

    def build_note(self, cfg: WorkloadConfig) -> str:
        """What :meth:`build` spends its time on, for the start-up line ``building NAME
        (note)…`` (e.g. ``8000 collocation points``); empty: none."""
        return ""
