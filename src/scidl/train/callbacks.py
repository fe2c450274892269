"""Trainer callbacks: objects with ``on_step_end(trainer, row)`` and/or ``on_train_end(trainer)``.

A callback implements either hook or both; the trainer calls the hooks a callback has, on
every rank, in the order the callbacks were given::

    class PrintLoss:
        def on_step_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
            print(trainer.step, row["loss"])

``row`` is the step's metrics row (``step``, ``loss``, ``lr``, timing, communication
counters, and ``eval/...`` keys when the step evaluated).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from scidl.train.trainer import Trainer

__all__ = ["OnStepEnd", "OnTrainEnd", "TrainerCallback"]


@runtime_checkable
class OnStepEnd(Protocol):
    """Called after every optimizer step (after evaluation and logging, before a checkpoint)."""

    def on_step_end(self, trainer: Trainer, row: dict[str, Any]) -> None: ...


@runtime_checkable
class OnTrainEnd(Protocol):
    """Called once when training has finished (after the final evaluation and checkpoint)."""

    def on_train_end(self, trainer: Trainer) -> None: ...


TrainerCallback = OnStepEnd | OnTrainEnd
"""A trainer callback: implements ``on_step_end``, ``on_train_end`` or both."""
