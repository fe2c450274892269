"""Train a Lightning ``LightningModule`` with SciDL's engine: :func:`lightning_task`.

The module's ``training_step(batch, batch_idx)`` becomes the task's loss and its
``validation_step`` the evaluation: what it passes to ``self.log``/``self.log_dict`` is
averaged over the validation batches and becomes the run's evaluation metrics
(``eval/val_loss`` …). SciDL then does what Lightning's ``Trainer`` would: processes and
launchers, data sharding, DDP with the chosen communication strategy, checkpoints and
resume, metrics, plus everything of SciDL's own (``comm.strategy=powersgd``,
``optim.name=lamb``, scaling runs, search).

What differs from Lightning's ``Trainer``:

* The optimizer and learning-rate schedule are SciDL's (``optim.*``); the module's
  ``configure_optimizers`` is not called (a note says so when the module defines it).
* Automatic optimisation only: ``training_step`` returns the loss (a tensor, or a dict
  with ``"loss"``); ``self.automatic_optimization = False`` is refused.
* There is no ``self.trainer``: a step that reads it fails with Lightning's own error.
  Hooks other than the two steps (``on_train_epoch_end`` …) are not called.

The data come as map-style datasets (``train_data``/``val_data``), or from a
``LightningDataModule`` (after ``prepare_data()`` and ``setup("fit")``, its
``train_dataloader().dataset`` and ``val_dataloader().dataset``), sharded by SciDL.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from scidl.config import ConfigError
from scidl.workloads.base import Task

__all__ = ["TrainingStep", "lightning_task"]


class TrainingStep(nn.Module):
    """``forward(batch)`` = the wrapped module's ``training_step(batch, batch_idx)`` loss,
    so DDP sees the step as one forward pass (gradient hooks, unused parameters)."""

    module: Any  # a LightningModule (its steps are not nn.Module attributes to the checker)

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.batch_idx = 0

    def forward(self, batch: Any) -> torch.Tensor:
        out = self.module.training_step(batch, self.batch_idx)
        self.batch_idx += 1
        loss = out.get("loss") if isinstance(out, Mapping) else out
        if not isinstance(loss, torch.Tensor):
            raise ConfigError(f"{type(self.module).__name__}.training_step returned "
                              f"{type(out).__name__}, not a loss tensor or a dict with 'loss'")
        return loss


class _Logged:
    """Stands in for ``LightningModule.log``/``log_dict``: keeps the numbers logged while
    ``active`` (the validation loop); what ``training_step`` logs is dropped (the run's
    rows carry the loss)."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}
        self.active = False

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        if not self.active:
            return
        v = value.detach().float().mean().item() if isinstance(value, torch.Tensor) else float(value)
        self.values.setdefault(name, []).append(v)

    def log_dict(self, values: Mapping[str, Any], *args: Any, **kwargs: Any) -> None:
        for k, v in values.items():
            self.log(k, v)

    def means(self) -> dict[str, float]:
        return {k: sum(v) / len(v) for k, v in self.values.items() if v}


def _datasets(datamodule: Any) -> tuple[Dataset, Dataset | None, Any]:
    datamodule.prepare_data()
    datamodule.setup("fit")
    train = datamodule.train_dataloader()
    try:
        val = datamodule.val_dataloader()
    except Exception:  # noqa: BLE001 - a datamodule without validation data
        val = None
    return train.dataset, val.dataset if val is not None else None, train.collate_fn


def lightning_task(module: nn.Module, datamodule: Any = None, *, train_data: Dataset | None = None,
                   val_data: Dataset | None = None, headline: str = "val_loss",
                   higher_is_better: bool = False, val_batch_size: int = 256) -> Task:
    """A SciDL task that trains ``module`` (a ``LightningModule``) through its steps.

    Args:
        module: the LightningModule (built after seeding, the same on every rank).
        datamodule: a LightningDataModule giving the data (or pass ``train_data``).
        train_data / val_data: map-style datasets, when there is no datamodule.
        headline: the metric ``validation_step`` logs that the run reports.
        higher_is_better: its direction.
        val_batch_size: batch size of the evaluation loop (rank 0).
    """
    if getattr(module, "automatic_optimization", True) is False:
        raise ConfigError(f"{type(module).__name__} uses manual optimisation "
                          "(automatic_optimization = False); SciDL steps the optimizer itself")
    collate = None
    if datamodule is not None:
        train_data, val_data, collate = _datasets(datamodule)
    if train_data is None:
        raise ConfigError("lightning_task needs a datamodule or train_data")
    if "configure_optimizers" in type(module).__dict__:
        warnings.warn(f"{type(module).__name__}.configure_optimizers is not used: SciDL's "
                      "optim.* settings choose the optimizer and schedule", stacklevel=2)
    logged = _Logged()
    object.__setattr__(module, "log", logged.log)  # this module's self.log, not Lightning's
    object.__setattr__(module, "log_dict", logged.log_dict)

    def loss(model: nn.Module, batch: Any) -> torch.Tensor:
        return model(batch)

    def evaluate(model: nn.Module, data: Dataset) -> dict[str, float]:
        inner: Any = model.module if isinstance(model, TrainingStep) else model
        if not hasattr(inner, "validation_step"):
            return {}
        logged.values.clear()
        loader = DataLoader(data, batch_size=val_batch_size, collate_fn=collate)
        device = next(inner.parameters()).device
        logged.active = True
        try:
            for i, batch in enumerate(loader):
                inner.validation_step(_to(batch, device), i)
        finally:
            logged.active = False
        return logged.means()

    return Task(model=TrainingStep(module), train_data=train_data, val_data=val_data, loss=loss,
                evaluate=evaluate, headline=headline, higher_is_better=higher_is_better,
                collate_fn=collate)


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, Mapping):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch
